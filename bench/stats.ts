/** Small statistics helpers for the benchmark report. */

export const median = (xs: ReadonlyArray<number>): number | null => percentile(xs, 50)

/** Linear-interpolated percentile (numpy's default), `p` in 0..100; null for no data. */
export const percentile = (xs: ReadonlyArray<number>, p: number): number | null => {
  if (xs.length === 0) return null
  const sorted = [...xs].sort((a, b) => a - b)
  const rank = (p / 100) * (sorted.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  const a = sorted[lo] ?? 0
  const b = sorted[hi] ?? a
  return a + (b - a) * (rank - lo)
}

export const mean = (xs: ReadonlyArray<number>): number | null =>
  xs.length === 0 ? null : xs.reduce((s, x) => s + x, 0) / xs.length

export const round = (x: number, digits = 0): number => {
  const f = 10 ** digits
  return Math.round(x * f) / f
}
