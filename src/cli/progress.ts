// A one-line progress bar on stderr (plain lines when stderr is not a terminal).

export class ProgressBar {
  private started = Date.now();
  private lastPlain = -1;

  constructor(private label: string, private total: number, private stream: NodeJS.WriteStream = process.stderr) {}

  update(done: number): void {
    const elapsed = (Date.now() - this.started) / 1000;
    const rate = done > 0 ? elapsed / done : 0;
    const eta = rate * (this.total - done);
    const text = `${this.label} ${done}/${this.total}  ${elapsed.toFixed(1)}s elapsed${done < this.total ? `, ~${eta.toFixed(1)}s left` : ""}`;
    if (this.stream.isTTY) {
      const width = 30;
      const filled = Math.round((done / this.total) * width);
      this.stream.write(`\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${text}\x1b[K`);
    } else if (done !== this.lastPlain) {
      this.lastPlain = done;
      this.stream.write(text + "\n");
    }
  }

  done(): void {
    if (this.stream.isTTY) this.stream.write("\n");
  }
}
