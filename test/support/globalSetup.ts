/**
 * Once per test run: find a Postgres (DATABASE_URL, or an embedded one started
 * here and stopped at the end, also on failure or Ctrl-C), and build a template
 * database with the migrations applied. Each test file clones the template
 * into a database of its own (test/support/db.ts).
 */
import { Effect } from "effect"
import type { TestProject } from "vitest/node"
import { startEmbeddedPostgres } from "../../scripts/embedded-postgres.ts"
import { adminQuery, createTemplate, withDatabase } from "./admin.ts"

declare module "vitest" {
  export interface ProvidedContext {
    readonly databaseUrl: string
    readonly templateDatabase: string
  }
}

export default async function setup(project: TestProject) {
  const server = process.env.DATABASE_URL ? undefined : await startEmbeddedPostgres()
  const url = process.env.DATABASE_URL ?? server!.url
  const template = `effect_jobs_template_${process.pid}`
  await Effect.runPromise(createTemplate(url, template))
  project.provide("databaseUrl", url)
  project.provide("templateDatabase", template)
  return async () => {
    await Effect.runPromise(
      adminQuery(url, (sql) => sql.unsafe(`DROP DATABASE IF EXISTS "${template}" WITH (FORCE)`)).pipe(Effect.ignore)
    )
    await server?.stop()
  }
}

export { withDatabase }
