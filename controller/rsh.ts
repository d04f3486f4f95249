// The remote shell that rsync runs for quick-migrate (`rsync --rsh "node rsh.js" <front>::site/`): called
// as `rsh.js <front> rsync --server --daemon .`, it hands its stdin/stdout to the controller's tunnel over
// a local socket; the controller carries the bytes to the front's agent on its already-open gRPC channel,
// where the agent's own rsync daemon answers.
// Kept to node:net alone so it starts fast.
import { connect } from "node:net";

const [host, ...args] = process.argv.slice(2);
const socketPath = process.env.QM_TUNNEL_SOCKET;
const token = process.env.QM_TUNNEL_TOKEN;
if (!host || !socketPath || !token) {
  process.stderr.write("quick-migrate rsh: only quick-migrate runs this (QM_TUNNEL_SOCKET and QM_TUNNEL_TOKEN unset)\n");
  process.exit(255);
}

const socket = connect({ path: socketPath, allowHalfOpen: true });
socket.write(`${JSON.stringify({ token, host, args })}\n`);
// end of our input is passed on as a half-close; the remote side decides when the session ends
process.stdin.pipe(socket);
socket.pipe(process.stdout);
socket.on("error", (err) => {
  process.stderr.write(`quick-migrate rsh: tunnel to ${host} broke: ${err.message}\n`);
  process.exit(255);
});
socket.on("end", () => {
  // flush what we still hold for rsync, then leave even if rsync keeps our stdin open
  process.stdout.write("", () => process.exit(0));
});
