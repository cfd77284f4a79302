/* Minimal stand-in for Pillow's Imaging.h: just enough for Resample.c to compile (8-bit L / RGB). */
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <stdint.h>
typedef uint8_t UINT8; typedef int32_t INT32; typedef uint32_t UINT32; typedef float FLOAT32;
#define CLIP16(v) ((v) <= 0 ? 0 : (v) < 65536 ? (v) : 65535)
typedef int16_t INT16; typedef uint16_t UINT16;
typedef enum { IMAGING_MODE_L, IMAGING_MODE_RGB, IMAGING_MODE_P, IMAGING_MODE_1, IMAGING_MODE_I_16, IMAGING_MODE_I_16N, IMAGING_MODE_I_16B, IMAGING_MODE_I_16L } ModeID;
#define IMAGING_TYPE_UINT8 0
#define IMAGING_TYPE_INT32 1
#define IMAGING_TYPE_FLOAT32 2
#define IMAGING_TYPE_SPECIAL 3
#define IMAGING_TRANSFORM_NEAREST 0
#define IMAGING_TRANSFORM_BOX 4
#define IMAGING_TRANSFORM_BILINEAR 2
#define IMAGING_TRANSFORM_HAMMING 5
#define IMAGING_TRANSFORM_BICUBIC 3
#define IMAGING_TRANSFORM_LANCZOS 1
struct ImagingMemoryInstance { ModeID mode; int type; int bands; int xsize, ysize; UINT8 **image8; INT32 **image32; char **image; int pixelsize; char *block; };
typedef struct ImagingMemoryInstance *Imaging;
typedef void *ImagingSectionCookie;
static inline void ImagingSectionEnter(ImagingSectionCookie *c) { (void)c; }
static inline void ImagingSectionLeave(ImagingSectionCookie *c) { (void)c; }
#define IMAGING_PIXEL_I(im, x, y) ((im)->image32[(y)][(x)])
#define IMAGING_PIXEL_F(im, x, y) (((FLOAT32 *)(im)->image32[y])[x])
#define MAKE_UINT32(u0, u1, u2, u3) ((UINT32)(u0) | ((UINT32)(u1) << 8) | ((UINT32)(u2) << 16) | ((UINT32)(u3) << 24))
static inline int isModeI16(ModeID m) { return m == IMAGING_MODE_I_16 || m == IMAGING_MODE_I_16N || m == IMAGING_MODE_I_16B || m == IMAGING_MODE_I_16L; }
static inline void *ImagingError_MemoryError(void) { abort(); }
static inline void *ImagingError_ModeError(void) { abort(); }
static inline void *ImagingError_ValueError(const char *m) { (void)m; abort(); }
Imaging ImagingNewDirty(ModeID mode, int xs, int ys);
Imaging ImagingCopy(Imaging im);
void ImagingDelete(Imaging im);
Imaging ImagingResample(Imaging imIn, int xsize, int ysize, int filter, float box[4]);
