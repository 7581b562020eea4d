/**
 * Plain-text tables and values for the command line's human output.
 */

/** Columns padded to their widest cell; a header line first. No colours, no box drawing. */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(headers), ...rows.map(line)].join("\n")
}

/** A time as ISO text, `-` for none. */
export const time = (d: Date | undefined): string => (d === undefined ? "-" : d.toISOString())

/** Text that may hold control characters (a job name, an error message), made safe for one terminal line. */
export const oneLine = (s: string): string =>
  // oxlint-disable-next-line no-control-regex
  s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : "?"))

/** `key  value` lines, keys padded. */
export const fields = (entries: ReadonlyArray<readonly [string, string]>): string => {
  const width = Math.max(...entries.map(([k]) => k.length))
  return entries.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n")
}
