/**
 * Fails early, with a clear message, on a Node.js older than the package needs.
 *
 * Imported first by `index.ts` (ESM evaluates a module's imports in order), so on an
 * old Node this throws before Effect's own code runs and fails somewhere obscure.
 * No imports of its own, so nothing is evaluated before it. A side effect: it is
 * listed in `sideEffects` in package.json.
 *
 * @internal
 */
const required = [22, 19] as const

const version: string = globalThis.process?.versions?.node ?? ""
const [major = 0, minor = 0] = version.split(".").map(Number)

if (version !== "" && (major < required[0] || (major === required[0] && minor < required[1]))) {
  throw new Error(
    `effect-jobs needs Node.js >= ${required[0]}.${required[1]} (Effect 4's floor); this is Node v${version}`
  )
}

export {}
