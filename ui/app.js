// The effect-jobs dashboard: one hand-written ES module, no framework, no build step.
// It reads and changes jobs through the dashboard's JSON API (api/, relative to <base>),
// builds the DOM with textContent only (job data is never parsed as HTML), and routes on
// the URL's hash: #/ (queues), #/jobs?state=&queue=&name=&q=&cursor= (list), #/jobs/<id>
// (one job), #/workers. A bearer token given as #token=<token> is kept in sessionStorage.

const STATES = ["scheduled", "available", "running", "completed", "dead", "cancelled"]
const POLL_MS = 2000

const main = document.getElementById("main")
const statusLine = document.getElementById("status")
let config = { readOnly: true, auth: "none", hiddenQueues: [] }
let timer = undefined
let renderId = 0

// -- helpers ------------------------------------------------------------------------------

/** An element: h("a", { href: "#/" }, "text", child). Strings become text nodes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v)
    else el.setAttribute(k, v === true ? "" : String(v))
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue
    el.append(c instanceof Node ? c : document.createTextNode(String(c)))
  }
  return el
}

function token() {
  return sessionStorage.getItem("effect-jobs-token")
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`)
    this.status = status
    this.tag = body?._tag
  }
}

async function api(method, path) {
  const headers = { accept: "application/json" }
  const t = token()
  if (t) headers.authorization = `Bearer ${t}`
  const res = await fetch(`api/${path}`, { method, headers, credentials: "same-origin" })
  if (res.status === 204) return undefined
  const body = await res.json().catch(() => undefined)
  if (!res.ok) throw new ApiError(res.status, body)
  return body
}

function time(iso) {
  if (!iso) return ""
  const d = new Date(iso)
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" })
}

function say(text, kind = "info") {
  statusLine.textContent = text
  statusLine.className = kind
}

function stateBadge(state) {
  return h("span", { class: `state ${state}` }, state)
}

/** A button that runs `action`, says what happened, and re-renders. */
function actionButton(label, action, attrs = {}) {
  return h("button", {
    ...attrs,
    type: "button",
    disabled: config.readOnly || undefined,
    title: config.readOnly ? "the dashboard is read-only" : attrs.title,
    onclick: async (event) => {
      event.target.disabled = true
      try {
        const message = await action()
        say(message ?? `${label}: done`, "ok")
      } catch (e) {
        say(`${label}: ${e.message}`, "error")
      }
      render()
    }
  }, label)
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/"
  const [path, query = ""] = raw.split("?")
  return { path, params: new URLSearchParams(query) }
}

function poll(fn) {
  clearTimeout(timer)
  const id = renderId
  timer = setTimeout(async () => {
    if (id !== renderId) return
    await fn()
    if (id === renderId) poll(fn)
  }, POLL_MS)
}

// -- pages ----------------------------------------------------------------------------------

async function overview() {
  const table = h("table", { class: "queues" })
  const draw = async () => {
    const { queues } = await api("GET", "queues")
    table.replaceChildren(
      h("thead", {}, h("tr", {}, h("th", {}, "queue"), STATES.map((s) => h("th", { class: "num" }, s)), h("th", {}, ""))),
      h(
        "tbody",
        {},
        queues.length === 0
          ? h("tr", {}, h("td", { colspan: STATES.length + 2 }, "No queues yet: enqueue a job."))
          : queues.map((q) =>
            h(
              "tr",
              { "data-queue": q.name },
              h("td", {}, h("a", { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name), q.paused ? h("span", { class: "paused" }, "paused") : ""),
              STATES.map((s) =>
                h(
                  "td",
                  { class: `num count ${s}`, "data-state": s },
                  h("a", { href: `#/jobs?queue=${encodeURIComponent(q.name)}&state=${s}` }, String(q.counts[s]))
                )
              ),
              h(
                "td",
                { class: "actions" },
                q.paused
                  ? actionButton("Resume", async () => {
                    await api("POST", `queues/${encodeURIComponent(q.name)}/resume`)
                    return `${q.name} resumed`
                  })
                  : actionButton("Pause", async () => {
                    await api("POST", `queues/${encodeURIComponent(q.name)}/pause`)
                    return `${q.name} paused: workers stop claiming its jobs`
                  }),
                q.counts.dead > 0
                  ? actionButton(`Retry ${q.counts.dead} dead`, async () => {
                    const { retried } = await api("POST", `queues/${encodeURIComponent(q.name)}/retry-dead`)
                    return `${retried} dead jobs of ${q.name} are available again`
                  })
                  : ""
              )
            )
          )
      )
    )
  }
  await draw()
  main.replaceChildren(h("h1", {}, "Queues"), table, h("p", { class: "hint" }, `Counts refresh every ${POLL_MS / 1000} s.`))
  poll(draw)
}

async function jobList(params) {
  const filters = ["state", "queue", "name", "q"]
  const query = new URLSearchParams()
  for (const f of [...filters, "cursor"]) if (params.get(f)) query.set(f, params.get(f))
  query.set("limit", "50")
  const page = await api("GET", `jobs?${query}`)
  const go = (p) => (location.hash = `#/jobs?${p}`)

  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault()
        const data = new FormData(event.target)
        const p = new URLSearchParams()
        for (const f of filters) if (data.get(f)) p.set(f, String(data.get(f)))
        go(p)
      }
    },
    h(
      "select",
      { name: "state", "aria-label": "state" },
      h("option", { value: "" }, "any state"),
      STATES.map((s) => h("option", { value: s, selected: params.get("state") === s }, s))
    ),
    h("input", { name: "queue", placeholder: "queue", value: params.get("queue") ?? "" }),
    h("input", { name: "name", placeholder: "job name", value: params.get("name") ?? "" }),
    h("input", { name: "q", placeholder: "id or unique key", value: params.get("q") ?? "" }),
    h("button", { type: "submit" }, "Filter")
  )

  const rows = page.jobs.map((j) =>
    h(
      "tr",
      { "data-id": j.id },
      h("td", {}, h("a", { href: `#/jobs/${j.id}` }, j.id)),
      h("td", {}, j.name),
      h("td", {}, j.queue),
      h("td", {}, stateBadge(j.state)),
      h("td", { class: "num" }, `${j.attempt}/${j.maxAttempts}`),
      h("td", {}, time(j.state === "scheduled" || j.state === "available" ? j.runAt : j.finalizedAt ?? j.attemptedAt ?? j.createdAt)),
      h("td", { class: "error" }, j.errors.at(-1)?.message ?? "")
    )
  )
  const next = new URLSearchParams(params)
  if (page.next) next.set("cursor", page.next)
  main.replaceChildren(
    h("h1", {}, "Jobs"),
    form,
    h(
      "table",
      { class: "jobs" },
      h("thead", {}, h("tr", {}, ["id", "name", "queue", "state", "attempt", "time", "last error"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7 }, "No jobs match.")))
    ),
    h(
      "p",
      { class: "pager" },
      params.get("cursor") ? h("a", { href: `#/jobs?${(() => { const p = new URLSearchParams(params); p.delete("cursor"); return p })()}` }, "« first page") : "",
      page.next ? h("a", { href: `#/jobs?${next}`, rel: "next" }, "next page »") : ""
    )
  )
}

function json(value) {
  return h("pre", { class: "json" }, value === null || value === undefined ? "—" : JSON.stringify(value, null, 2))
}

async function jobPage(id) {
  const draw = async () => {
    const j = await api("GET", `jobs/${encodeURIComponent(id)}`)
    const waiting = j.state === "scheduled" || j.state === "available"
    const actions = [
      j.state === "dead" || j.state === "cancelled"
        ? actionButton("Retry", async () => {
          await api("POST", `jobs/${j.id}/retry`)
          return `job ${j.id} is available again`
        }, { id: "retry" })
        : "",
      waiting || j.state === "running"
        ? actionButton("Cancel", async () => {
          const { outcome } = await api("POST", `jobs/${j.id}/cancel`)
          return outcome === "cancelled" ? `job ${j.id} cancelled` : `job ${j.id}: its worker is asked to stop it`
        }, { id: "cancel" })
        : "",
      j.state !== "running"
        ? actionButton("Delete", async () => {
          if (!confirm(`Delete job ${j.id}? This cannot be undone.`)) return "not deleted"
          await api("DELETE", `jobs/${j.id}`)
          location.hash = "#/jobs"
          return `job ${j.id} deleted`
        }, { id: "delete", class: "danger" })
        : ""
    ]
    const field = (label, value) => [h("dt", {}, label), h("dd", {}, value ?? "—")]
    main.replaceChildren(
      h("h1", {}, `Job ${j.id} `, stateBadge(j.state)),
      h("p", { class: "actions" }, actions),
      h(
        "dl",
        { class: "fields" },
        field("name", j.name),
        field("queue", h("a", { href: `#/jobs?queue=${encodeURIComponent(j.queue)}` }, j.queue)),
        field("attempt", `${j.attempt} of ${j.maxAttempts}`),
        field("priority", String(j.priority)),
        field("unique key", j.uniqueKey),
        field("request id", j.requestId),
        field("created", time(j.createdAt)),
        field(waiting ? "runs at" : "run at", time(j.runAt)),
        field("last attempt", time(j.attemptedAt)),
        field("finished", time(j.finalizedAt)),
        field("pruned at", time(j.pruneAt)),
        j.lockedBy ? field("worker", `${j.lockedBy} (lease until ${time(j.leaseExpiresAt)})`) : "",
        j.cancelRequestedAt ? field("cancel requested", time(j.cancelRequestedAt)) : ""
      ),
      h("h2", {}, "Arguments"),
      j.argsHidden ? h("p", { class: "hidden-args" }, "Hidden: this queue's arguments and results are not shown.") : json(j.args),
      h("h2", {}, "Result"),
      j.argsHidden ? h("p", { class: "hidden-args" }, "Hidden.") : json(j.result),
      h("h2", {}, "Errors"),
      j.errors.length === 0
        ? h("p", {}, "None.")
        : h(
          "table",
          { class: "errors" },
          h("thead", {}, h("tr", {}, h("th", {}, "attempt"), h("th", {}, "at"), h("th", {}, "kind"), h("th", {}, "message"))),
          h("tbody", {}, j.errors.map((e) => h("tr", {}, h("td", { class: "num" }, String(e.attempt)), h("td", {}, time(e.at)), h("td", {}, e.kind), h("td", {}, h("pre", {}, e.message)))))
        ),
      h("h2", {}, "Metadata"),
      json(Object.keys(j.metadata).length ? j.metadata : null)
    )
    return j
  }
  const j = await draw()
  if (!["completed", "dead", "cancelled"].includes(j.state)) poll(draw)
}

async function workers() {
  const table = h("table", { class: "workers" })
  const draw = async () => {
    const { workers } = await api("GET", "workers")
    table.replaceChildren(
      h("thead", {}, h("tr", {}, ["worker", "queues", "concurrency", "jobs held", "started", "last seen"].map((c) => h("th", {}, c)))),
      h(
        "tbody",
        {},
        workers.length === 0
          ? h("tr", {}, h("td", { colspan: 6 }, "No live worker (a worker with listen: false does not register)."))
          : workers.map((w) =>
            h(
              "tr",
              { "data-worker": w.id },
              h("td", {}, w.id),
              h("td", {}, w.queues.join(", ")),
              h("td", { class: "num" }, String(w.concurrency)),
              h("td", { class: "num" }, String(w.jobsHeld)),
              h("td", {}, time(w.startedAt)),
              h("td", {}, time(w.lastSeenAt))
            )
          )
      )
    )
  }
  main.replaceChildren(h("h1", {}, "Workers"), table)
  await draw()
  poll(draw)
}

function tokenForm(message) {
  main.replaceChildren(
    h("h1", {}, "Sign in"),
    h("p", {}, message),
    h(
      "form",
      {
        onsubmit: (event) => {
          event.preventDefault()
          sessionStorage.setItem("effect-jobs-token", String(new FormData(event.target).get("token")))
          start()
        }
      },
      h("input", { name: "token", type: "password", placeholder: "token", autocomplete: "current-password", required: true }),
      h("button", { type: "submit" }, "Open")
    )
  )
}

// -- routing --------------------------------------------------------------------------------

async function render() {
  renderId++
  clearTimeout(timer)
  const { path, params } = parseHash()
  try {
    if (path === "/" || path === "") await overview()
    else if (path === "/jobs") await jobList(params)
    else if (path.startsWith("/jobs/")) await jobPage(decodeURIComponent(path.slice("/jobs/".length)))
    else if (path === "/workers") await workers()
    else main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Queues")))
  } catch (e) {
    if (e.status === 401) return tokenForm(e.message)
    main.replaceChildren(h("h1", {}, "Error"), h("p", { class: "error" }, e.message))
  }
}

async function start() {
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem("effect-jobs-token", decodeURIComponent(location.hash.slice("#token=".length)))
    history.replaceState(null, "", location.pathname + location.search + "#/")
  }
  try {
    config = await api("GET", "config")
  } catch (e) {
    if (e.status === 401) return tokenForm(e.message)
    main.replaceChildren(h("h1", {}, "Error"), h("p", { class: "error" }, e.message))
    return
  }
  document.getElementById("mode").textContent = config.readOnly ? "read-only" : ""
  await render()
}

addEventListener("hashchange", () => {
  say("")
  if (location.hash.startsWith("#token=")) start()
  else render()
})
start()
