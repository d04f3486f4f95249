// A remote shell for rsync as a hostile holder of an allowed client certificate could write it: it
// opens the agent's Rsync stream itself (no controller) and sends a start frame for the migration and
// step it is told, with the arguments its rsync asked for (or hand-built ones, QM_ROGUE_ARGS as JSON),
// then carries the bytes both ways. Called by rsync as `rogue-rsh.mjs <host> <args…>`.
// Environment: QM_ROGUE_ADDRESS, QM_ROGUE_MIGRATION, QM_ROGUE_STEP, and for TLS QM_ROGUE_CA,
// QM_ROGUE_CERT, QM_ROGUE_KEY (plaintext without them).
import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { AgentClient } from "../../dist/shared/generated/quickmigrate/v1/agent.js";

// rsync sends its remote shell SIGUSR1 to stop it when a run fails: end as a non-Node shell would,
// instead of Node's default (opening its inspector on 127.0.0.1:9229, which other tests look for)
process.on("SIGUSR1", () => process.exit(255));

const [host, ...asked] = process.argv.slice(2);
const env = process.env;
const credentials = env.QM_ROGUE_CA
  ? grpc.credentials.createSsl(readFileSync(env.QM_ROGUE_CA), readFileSync(env.QM_ROGUE_KEY), readFileSync(env.QM_ROGUE_CERT))
  : grpc.credentials.createInsecure();
const client = new AgentClient(env.QM_ROGUE_ADDRESS, credentials, { "grpc.ssl_target_name_override": host, "grpc.default_authority": host });
const call = client.rsync();
const args = env.QM_ROGUE_ARGS ? JSON.parse(env.QM_ROGUE_ARGS) : asked;
call.write({ frame: { $case: "start", value: { migrationId: env.QM_ROGUE_MIGRATION, step: env.QM_ROGUE_STEP, args } } });

process.stdin.on("data", (data) => {
  if (!call.write({ frame: { $case: "data", value: data } })) {
    process.stdin.pause();
    call.once("drain", () => process.stdin.resume());
  }
});
process.stdin.on("end", () => call.end());

let exitCode = 255;
call.on("data", (message) => {
  const f = message.frame;
  if (f?.$case === "data") process.stdout.write(f.value);
  else if (f?.$case === "stderr") process.stderr.write(f.value);
  else if (f?.$case === "exit") exitCode = f.value.code;
});
call.on("error", (err) => {
  process.stderr.write(`rogue rsh: ${grpc.status[err.code]} ${String(err.metadata?.get("qm-error-code")[0] ?? "")}: ${err.details}\n`);
});
call.on("status", () => {
  process.stdout.write("", () => process.exit(exitCode));
});
