// effect 4.1.0's dist/crypto/KeyFormat.d.ts names `JsonWebKey`, a global of the DOM lib,
// which a Node-only app (lib ES2023, no "DOM") does not have: with skipLibCheck false that is
// TS2304 in effect's own declarations (none in effect-jobs'). An app would add "DOM" to lib;
// this stands in for it with Node's own type, so the check stays strict for everything else.
type JsonWebKey = import("node:crypto").webcrypto.JsonWebKey
