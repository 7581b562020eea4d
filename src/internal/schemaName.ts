/**
 * Schema names: the check behind `PgSchema.make`, and the qualified names the store and
 * the migrations build from a checked name.
 */
/**
 * The longest name accepted. NOTIFY channel names are the schema's name plus a
 * suffix (`.cancel`), and Postgres cuts identifiers at 63 bytes.
 */
export const maxLength = 48

const valid = /^[a-z_][a-z0-9_]*$/

/** Why a name is refused, or undefined when it is fine. */
export const problem = (name: unknown): string | undefined => {
  if (typeof name !== "string" || name === "") return "the name is empty"
  if (name.length > maxLength) return `the name is longer than ${maxLength} characters`
  if (!valid.test(name)) {
    return `${JSON.stringify(name)} may contain only lower-case letters, digits and _, and may not start with a digit`
  }
  if (name.startsWith("pg_") || name === "information_schema") return `${name} is reserved by Postgres`
  if (name === "public") return "public is the application's schema: give effect-jobs a schema of its own"
  return undefined
}

/** Checks a name that did not come through `make` (a `Layer.succeed(PgSchema, ...)`); dies on a bad one. */
export const assertValid = (name: string): string => {
  const reason = problem(name)
  if (reason !== undefined) throw new Error(`effect-jobs: invalid schema name: ${reason}`)
  return name
}

/** The schema-qualified name of one of the library's objects: `"effect_jobs".jobs`. */
export const qualify = (schema: string, object: string): string => `"${schema}".${object}`
