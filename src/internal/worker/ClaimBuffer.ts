/**
 * A producer's buffer of claimed jobs, in the order they are to start: by priority (lower
 * first), then in the order they were claimed. A claim returns its jobs in priority order,
 * but a later claim (or a probe, see Producer.ts) can bring jobs better than some already
 * buffered: those go ahead of them, instead of waiting behind the whole buffer.
 *
 * One first-in first-out bucket per priority present, kept sorted. With every buffered job
 * of one priority (the usual case: all default) there is one bucket, and `push` and `shift`
 * cost a comparison more than a plain Fifo.
 *
 * @internal
 */
import { Fifo } from "./Fifo.ts"

interface Bucket<A> {
  readonly priority: number
  readonly items: Fifo<A>
}

export class ClaimBuffer<A> {
  /** Ascending priority; none is empty. */
  private buckets: Array<Bucket<A>> = []
  private count = 0
  private readonly priorityOf: (a: A) => number
  constructor(priorityOf: (a: A) => number) {
    this.priorityOf = priorityOf
  }
  get length(): number {
    return this.count
  }
  /** The worst (highest) priority buffered, if any. */
  worst(): number | undefined {
    return this.buckets[this.buckets.length - 1]?.priority
  }
  /** How many buffered jobs have the worst priority. */
  worstCount(): number {
    return this.buckets[this.buckets.length - 1]?.items.length ?? 0
  }
  push(a: A): void {
    const priority = this.priorityOf(a)
    const last = this.buckets[this.buckets.length - 1]
    // (a claim returns its jobs in priority order: they nearly always go to the last bucket)
    const bucket = last !== undefined && last.priority === priority ? last : this.bucketFor(priority)
    bucket.items.push(a)
    this.count++
  }
  /** The next job to start. */
  shift(): A | undefined {
    const first = this.buckets[0]
    if (first === undefined) return undefined
    const a = first.items.shift()!
    if (first.items.length === 0) this.buckets.shift()
    this.count--
    return a
  }
  /** Takes up to `n` jobs of the worst priority, the last claimed first (the last in line). */
  popWorst(n: number): Array<A> {
    const taken: Array<A> = []
    const last = this.buckets[this.buckets.length - 1]
    if (last === undefined) return taken
    while (taken.length < n && last.items.length > 0) taken.push(last.items.pop()!)
    if (last.items.length === 0) this.buckets.pop()
    this.count -= taken.length
    return taken
  }
  /** Removes `a`; whether it was there. */
  remove(a: A): boolean {
    const priority = this.priorityOf(a)
    const i = this.buckets.findIndex((b) => b.priority === priority)
    if (i < 0) return false
    const bucket = this.buckets[i]!
    if (bucket.items.remove((x) => x === a) === undefined) return false
    if (bucket.items.length === 0) this.buckets.splice(i, 1)
    this.count--
    return true
  }
  /** Everything, in start order; the buffer is left empty. */
  takeAll(): Array<A> {
    const all = this.buckets.flatMap((b) => b.items.takeAll())
    this.buckets = []
    this.count = 0
    return all
  }
  /** The bucket of `priority`, made (in its sorted place) if there is none. */
  private bucketFor(priority: number): Bucket<A> {
    let i = this.buckets.length
    while (i > 0 && this.buckets[i - 1]!.priority > priority) i--
    const before = this.buckets[i - 1]
    if (before !== undefined && before.priority === priority) return before
    const bucket: Bucket<A> = { priority, items: new Fifo<A>() }
    this.buckets.splice(i, 0, bucket)
    return bucket
  }
}
