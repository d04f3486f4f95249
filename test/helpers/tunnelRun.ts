// One fetch-site run of the controller's rsync tunnel against a stand-in for web1's agent (its stream is
// the test's), into a staging folder under `dir`: for the unit tests of RsyncTunnel with the real rsync.
import { join } from "node:path";
import type { AgentConnectionLike } from "../../controller/agentConnection.js";
import type { RsyncTunnel } from "../../controller/tunnel.js";
import { rsyncRemote } from "../../shared/rsyncArgs.js";

export function fetchFromWeb1(tunnel: RsyncTunnel, front: AgentConnectionLike, dir: string): Promise<void> {
  return tunnel.run({
    front,
    migrationId: "m1",
    run: 1,
    step: "fetch-site",
    remoteFolder: "p1/sites/a.example.com",
    source: rsyncRemote("web1"),
    destination: `${join(dir, "site")}/`,
    dataDirs: ["files"],
  });
}
