/**
 * `npm run api-check`: docs/api.md lists every export of the package, and nothing else.
 *
 * Reads the real exports from the built declaration files (run `npm run build` first;
 * the npm script does): each entry point of package.json `exports` (`dist/index.d.ts`, `dist/entry/dashboard.d.ts`) gives the modules (`export * as X from
 * "./X.js"`) and the top-level ones (`export * from "./Errors.js"`), and each module's
 * `.d.ts` its exports, values and types apart. The value exports are checked against the
 * runtime keys of `await import("../dist/index.js")`, so a line this parser misses
 * fails here rather than passing unseen. Then each export must have exactly one line in
 * docs/api.md, marked "(type)" if and only if it is a type only, under its module's
 * heading, and each line must name a real export. Exits 1 with the list otherwise.
 *
 * Usage: `node scripts/api-check.ts [path/to/api.md]` (default docs/api.md).
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const dist = join(root, "dist")
const docPath = resolve(process.argv[2] ?? join(root, "docs/api.md"))
const docName = relative(root, docPath).startsWith("..") ? docPath : relative(root, docPath)
/** The heading of the section that lists the top-level exports (`export * from`). */
const topLevelSection = "Errors"

type Kind = "value" | "type"
/** Export name to kind, for one module (or for the top level). */
type Exports = Map<string, Kind>

const problems: Array<string> = []
/** Group `i` of a match whose pattern always captures it. */
const group = (m: RegExpMatchArray, i: number): string => m[i] ?? ""

// --- The real exports, from the declaration files ------------------------------------

const index = join(dist, "index.d.ts")
if (!existsSync(index)) {
  console.error("api-check: dist/index.d.ts not found; run `npm run build` first (`npm run api-check` does)")
  process.exit(1)
}
// A dist/ older than src/ would check yesterday's API.
const built = statSync(index).mtimeMs
const newer = readdirSync(join(root, "src"), { recursive: true, encoding: "utf8" })
  .filter((file) => file.endsWith(".ts") && statSync(join(root, "src", file)).mtimeMs > built)
if (newer.length > 0) {
  console.error(`api-check: dist/ is older than src/ (${newer.slice(0, 3).join(", ")}); run \`npm run api-check\`, which builds first`)
  process.exit(1)
}

/** The top-level statements of a .d.ts that start with `export`, each on one line. */
const exportStatements = (text: string): Array<string> => {
  const statements: Array<string> = []
  const lines = text.split("\n")
  for (let i = 0; i < lines.length; i++) {
    let statement = lines[i] ?? ""
    if (!statement.startsWith("export")) continue // tsc indents everything that is not top level
    // `export { a,\n b }` or `export type {\n ... } from "x"`: join up to the closing brace.
    if (/^export\s+(type\s+)?\{/.test(statement)) {
      while (!statement.includes("}") && i + 1 < lines.length) statement += " " + (lines[++i] ?? "").trim()
    }
    statements.push(statement)
  }
  return statements
}

const seen = new Set<string>()
/** The exports of one declaration file, following `export * from` chains. */
const exportsOf = (file: string): Exports => {
  const exports: Exports = new Map()
  if (seen.has(file)) return exports // a cycle of `export *`: its exports are counted once
  seen.add(file)
  const name = relative(dist, file)
  if (!existsSync(file)) {
    problems.push(`parser: ${name} not found`)
    return exports
  }
  const add = (key: string, kind: Kind) => {
    // A class or a const merged with a type of the same name is a value.
    if (exports.get(key) !== "value") exports.set(key, kind)
  }
  for (const statement of exportStatements(readFileSync(file, "utf8"))) {
    let m: RegExpMatchArray | null
    if (/^export\s*\{\s*\};?$/.test(statement)) continue // `export {};`: marks a module, exports nothing
    if ((m = statement.match(/^export\s+declare\s+(?:abstract\s+)?(?:const|let|var|function|class|enum|namespace|module)\s+([A-Za-z_$][\w$]*)/))) {
      // (`export declare const a: A, b: B;` would give `a` only; tsc emits one per statement,
      // and the run-time check below would report `b`.)
      add(group(m, 1), "value")
    } else if ((m = statement.match(/^export\s+(?:declare\s+)?(interface|type)\s+([A-Za-z_$][\w$]*)/))) {
      add(group(m, 2), "type")
    } else if ((m = statement.match(/^export\s+(type\s+)?\{([^}]*)\}\s*(?:from\s+(["'])([^"']+)\3)?\s*;?$/))) {
      const typeOnly = m[1] !== undefined
      const source = m[4] !== undefined ? exportsOf(join(dirname(file), m[4].replace(/\.js$/, ".d.ts"))) : undefined
      for (const part of group(m, 2).split(",").map((s) => s.trim()).filter((s) => s !== "")) {
        const p = part.match(/^(type\s+)?([A-Za-z_$][\w$]*)(?:\s+as\s+([A-Za-z_$][\w$]*))?$/)
        if (p === null) {
          problems.push(`parser: ${name}: cannot read "${part}" in: ${statement}`)
          continue
        }
        // `export { a }` of a local or imported name: a value unless marked `type`, or a type where it comes from.
        const kind: Kind = typeOnly || p[1] !== undefined ? "type" : source?.get(group(p, 2)) ?? "value"
        add(p[3] ?? group(p, 2), kind)
      }
    } else if ((m = statement.match(/^export\s+(type\s+)?\*\s+from\s+(["'])([^"']+)\2\s*;?$/))) {
      const typeOnly = m[1] !== undefined
      for (const [key, kind] of exportsOf(join(dirname(file), group(m, 3).replace(/\.js$/, ".d.ts")))) add(key, typeOnly ? "type" : kind)
    } else if ((m = statement.match(/^export\s+(type\s+)?\*\s+as\s+([A-Za-z_$][\w$]*)\s+from/))) {
      add(group(m, 2), m[1] !== undefined ? "type" : "value")
    } else {
      problems.push(`parser: ${name}: an export statement this script does not read: ${statement}`)
    }
  }
  return exports
}

/**
 * The package's entry points: "." and each subpath of package.json `exports` (other than
 * ./package.json), as the declaration file and the module their `types` and `default` name.
 */
const entries: Array<{ readonly subpath: string; readonly types: string; readonly js: string }> = []
const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  readonly exports: Record<string, string | { readonly types?: string; readonly default?: string }>
}
for (const [subpath, target] of Object.entries(manifest.exports)) {
  if (typeof target === "string" || target.types === undefined || target.default === undefined) continue
  entries.push({ subpath, types: join(root, target.types), js: join(root, target.default) })
}

/** Module namespace name to its exports; `topLevelSection` for those re-exported at the top. */
const modules = new Map<string, Exports>()
const topLevel: Exports = new Map()
for (const entry of entries) {
  if (!existsSync(entry.types)) {
    problems.push(`parser: ${relative(root, entry.types)} (the types of "${entry.subpath}") not found`)
    continue
  }
  for (const statement of exportStatements(readFileSync(entry.types, "utf8"))) {
    let m: RegExpMatchArray | null
    if ((m = statement.match(/^export\s+\*\s+as\s+([A-Za-z_$][\w$]*)\s+from\s+(["'])([^"']+)\2/))) {
      seen.clear()
      if (modules.has(group(m, 1))) problems.push(`parser: module ${group(m, 1)} is exported by two entry points`)
      modules.set(group(m, 1), exportsOf(join(dirname(entry.types), group(m, 3).replace(/\.js$/, ".d.ts"))))
    } else if ((m = statement.match(/^export\s+\*\s+from\s+(["'])([^"']+)\1/)) && entry.subpath === ".") {
      seen.clear()
      for (const [key, kind] of exportsOf(join(dirname(entry.types), group(m, 2).replace(/\.js$/, ".d.ts")))) topLevel.set(key, kind)
    } else if (!/^export\s*\{\s*\};?$/.test(statement)) {
      problems.push(`parser: ${relative(root, entry.types)}: an export statement this script does not read: ${statement}`)
    }
  }
}

// --- The same, at run time: catches what the parser missed ----------------------------

const sorted = (keys: Iterable<string>) => [...keys].sort()
const compare = (where: string, parsed: Array<string>, actual: Array<string>) => {
  for (const key of actual) if (!parsed.includes(key)) problems.push(`parser: ${where}${key} exists at run time but was not read from the .d.ts`)
  for (const key of parsed) if (!actual.includes(key)) problems.push(`parser: ${where}${key} read as a value from the .d.ts but absent at run time`)
}
const valuesOf = (exports: Exports) => sorted([...exports].filter(([, kind]) => kind === "value").map(([key]) => key))
const runtimeKeys: Array<string> = []
for (const entry of entries) {
  const runtime: Record<string, unknown> = await import(pathToFileURL(entry.js).href)
  runtimeKeys.push(...Object.keys(runtime))
  for (const [module, exports] of modules) {
    const namespace = runtime[module]
    if (typeof namespace === "object" && namespace !== null) compare(`${module}.`, valuesOf(exports), sorted(Object.keys(namespace)))
  }
}
compare("", sorted([...modules.keys(), ...valuesOf(topLevel)]), sorted(runtimeKeys))

// --- docs/api.md ----------------------------------------------------------------------

/** Every export as it is written in the page: `Module.name`, or `name` at the top level. */
const real = new Map<string, { kind: Kind; section: string }>()
for (const [module, exports] of modules) for (const [key, kind] of exports) real.set(`${module}.${key}`, { kind, section: module })
for (const [key, kind] of topLevel) real.set(key, { kind, section: topLevelSection })

if (!existsSync(docPath)) {
  console.error(`api-check: ${docName} not found`)
  process.exit(1)
}
/** `- \`Module.name\` (type) — One sentence.` */
const entry = /^- `([A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)?)`( \(type\))? — (\S.*)$/
const listed = new Map<string, number>()
let section: string | undefined
readFileSync(docPath, "utf8").split("\n").forEach((line, i) => {
  const at = `${docName}:${i + 1}`
  const heading = line.match(/^##\s+(.+?)\s*$/)
  if (heading) {
    section = group(heading, 1).replace(/`/g, "")
    return
  }
  if (!line.startsWith("- `")) return
  const m = line.match(entry)
  if (m === null) {
    problems.push(`${at}: not an entry line ("- \`Module.name\` — one sentence", "(type)" before the dash for a type): ${line}`)
    return
  }
  const name = group(m, 1)
  const typeMark = m[2]
  if (listed.has(name)) problems.push(`${at}: \`${name}\` listed twice (first on line ${listed.get(name)})`)
  listed.set(name, i + 1)
  const found = real.get(name)
  if (found === undefined) {
    problems.push(`${at}: stale: \`${name}\` is not an export of the package`)
    return
  }
  if (section !== found.section) problems.push(`${at}: \`${name}\` belongs under "## ${found.section}", not "## ${section ?? "(no heading)"}"`)
  if (found.kind === "type" && typeMark === undefined) problems.push(`${at}: \`${name}\` is a type only: mark it "(type)"`)
  if (found.kind === "value" && typeMark !== undefined) problems.push(`${at}: \`${name}\` is a value: drop "(type)"`)
})
for (const [name, { kind, section }] of real) {
  if (!listed.has(name)) problems.push(`missing: \`${name}\`${kind === "type" ? " (type)" : ""} is exported but not listed in ${docName} (under "## ${section}")`)
}

if (problems.length > 0) {
  console.error(`api-check: ${problems.length} problem${problems.length === 1 ? "" : "s"}:`)
  for (const problem of problems) console.error(`  ${problem}`)
  process.exit(1)
}
const values = [...real.values()].filter((e) => e.kind === "value").length
console.log(`api-check: ${docName} lists all ${real.size} exports (${values} values, ${real.size - values} types) of ${modules.size} modules and the top level`)
