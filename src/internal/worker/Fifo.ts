/**
 * A first-in first-out buffer: an array and a read position, compacted now and then, so
 * that taking the next job is O(1) (`Array.prototype.shift` moves every element behind it).
 *
 * @internal
 */
export class Fifo<A> {
  private items: Array<A> = []
  private head = 0
  get length() {
    return this.items.length - this.head
  }
  push(a: A) {
    this.items.push(a)
  }
  shift(): A | undefined {
    if (this.head >= this.items.length) return undefined
    const a = this.items[this.head++]!
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return a
  }
  /** Takes the last element (the one pushed most recently). */
  pop(): A | undefined {
    return this.head < this.items.length ? this.items.pop() : undefined
  }
  /** Removes and returns the first element that matches. */
  remove(f: (a: A) => boolean): A | undefined {
    for (let i = this.head; i < this.items.length; i++) {
      if (f(this.items[i]!)) return this.items.splice(i, 1)[0]
    }
    return undefined
  }
  takeAll(): Array<A> {
    const all = this.items.slice(this.head)
    this.items = []
    this.head = 0
    return all
  }
}
