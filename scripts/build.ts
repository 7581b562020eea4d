/**
 * `npm run build`: src/ to dist/ with tsconfig.build.json, then fixes the .d.ts files.
 *
 * tsc rewrites `./X.ts` to `./X.js` in the JavaScript it emits
 * (`rewriteRelativeImportExtensions`) but not in declaration files
 * (microsoft/TypeScript#61037), where a consumer's tsc would then stop on TS5097.
 * So every relative `.ts` specifier in dist/**\/*.d.ts is rewritten here (same
 * length, so the declaration maps stay right), and the build fails if one is left.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const dist = join(root, "dist")

rmSync(dist, { recursive: true, force: true })
execFileSync(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.build.json")], {
  cwd: root,
  stdio: "inherit"
})

/** `from "./a.ts"`, `import("../b.mts")`, `import "./c.ts"`: the quoted relative specifier. */
const specifier = /((?:\bfrom|\bimport)\s*\(?\s*)(["'])(\.{1,2}\/[^"'\n]*?)\.([mc]?)ts\2/g

const files = readdirSync(dist, { recursive: true, encoding: "utf8" }).filter((file) => file.endsWith(".d.ts"))
let rewritten = 0
for (const file of files) {
  const path = join(dist, file)
  const text = readFileSync(path, "utf8")
  const fixed = text.replace(specifier, (_, lead: string, quote: string, base: string, m: string) => {
    if (base.endsWith(".d")) return `${lead}${quote}${base}.${m}ts${quote}` // a .d.ts specifier: left alone
    rewritten++
    return `${lead}${quote}${base}.${m}js${quote}`
  })
  if (fixed !== text) writeFileSync(path, fixed)
}

const left = files.filter((file) => /(["'])\.{1,2}\/[^"'\n]*\.[mc]?ts\1/.test(readFileSync(join(dist, file), "utf8").replace(/\.d\.[mc]?ts(["'])/g, "$1")))
if (left.length > 0) {
  console.error(`build: relative .ts specifiers left in ${left.join(", ")}`)
  process.exit(1)
}
// The command line (package.json "bin"): runnable as ./dist/cli/bin.js too, not only by `node` and npm's link.
chmodSync(join(dist, "cli/bin.js"), 0o755)

console.log(`build: dist/ written (${files.length} declaration files, ${rewritten} specifiers rewritten to .js)`)
