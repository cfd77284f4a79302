/* Oracle: Image.resize((nw, nh), LANCZOS) for 8-bit L / RGB, using Pillow's own Resample.c.
   stdin: "w h bands nw nh\n" + w*h*bands bytes; stdout: nw*nh*bands bytes. */
#include <stdio.h>
#include "Imaging.h"
Imaging ImagingNewDirty(ModeID mode, int xs, int ys) {
  Imaging im = calloc(1, sizeof(*im));
  im->mode = mode; im->type = IMAGING_TYPE_UINT8; im->xsize = xs; im->ysize = ys;
  im->bands = mode == IMAGING_MODE_L ? 1 : 3; im->pixelsize = mode == IMAGING_MODE_L ? 1 : 4;
  im->block = calloc((size_t)xs * ys * im->pixelsize + 1, 1);
  im->image = malloc(sizeof(char *) * (ys + 1));
  for (int y = 0; y < ys; y++) im->image[y] = im->block + (size_t)y * xs * im->pixelsize;
  if (mode == IMAGING_MODE_L) im->image8 = (UINT8 **)im->image; else im->image32 = (INT32 **)im->image;
  return im;
}
Imaging ImagingCopy(Imaging src) {
  Imaging im = ImagingNewDirty(src->mode, src->xsize, src->ysize);
  memcpy(im->block, src->block, (size_t)src->xsize * src->ysize * src->pixelsize);
  return im;
}
void ImagingDelete(Imaging im) { if (!im) return; free(im->block); free(im->image); free(im); }
int main(void) {
  int w, h, b, nw, nh;
  if (scanf("%d %d %d %d %d", &w, &h, &b, &nw, &nh) != 5) return 2;
  getchar();
  Imaging im = ImagingNewDirty(b == 1 ? IMAGING_MODE_L : IMAGING_MODE_RGB, w, h);
  for (int y = 0; y < h; y++) for (int x = 0; x < w; x++) for (int c = 0; c < b; c++) {
    int v = getchar(); if (v < 0) return 3;
    im->image[y][x * im->pixelsize + c] = (char)v;
  }
  Imaging out;
  /* Python-level Image.resize rules */
  if (w == nw && h == nh) out = ImagingCopy(im);
  else if (h > w * 100 && nh < h) {
    float box1[4] = {0, 0, (float)w, (float)h};
    Imaging t = ImagingResample(im, w, nh, IMAGING_TRANSFORM_LANCZOS, box1);
    float box2[4] = {0, 0, (float)w, (float)nh};
    out = ImagingResample(t, nw, nh, IMAGING_TRANSFORM_LANCZOS, box2);
  } else {
    float box[4] = {0, 0, (float)w, (float)h};
    out = ImagingResample(im, nw, nh, IMAGING_TRANSFORM_LANCZOS, box);
  }
  for (int y = 0; y < nh; y++) for (int x = 0; x < nw; x++) for (int c = 0; c < b; c++)
    putchar((unsigned char)out->image[y][x * out->pixelsize + c]);
  return 0;
}
