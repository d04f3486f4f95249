// Config files: one schema each, defaults filled in, unknown keys refused, every problem reported at once with file and key.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isLoopback, loadAgentConfig } from "../../agent/config.js";
import { loadControllerConfig } from "../../controller/config.js";
import { QmError } from "../../shared/errors.js";

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "qm-config-"));
});
afterEach(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function write(text: string, name = "config.yaml"): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, text);
  return file;
}

async function configError(p: Promise<unknown>): Promise<QmError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected the config to be refused").toBeInstanceOf(QmError);
  const q = err as QmError;
  expect(q.code).toBe("CONFIG_INVALID");
  return q;
}

/** The lines of a CONFIG_INVALID error; each must start with the file path. */
function problemLines(err: QmError, file: string): string[] {
  const lines = err.message.split("\n");
  for (const line of lines) expect(line.startsWith(`${file}: `), line).toBe(true);
  return lines;
}

const CONTROLLER = `
root: /var/aegir/platforms
stateDir: /var/lib/quick-migrate
insecure: true
fronts:
  - name: web1
    address: 127.0.0.1:7101
  - name: web2
    address: "[::1]:7102"
`;

describe("loadControllerConfig", () => {
  it("reads a valid file and fills in the defaults", async () => {
    const c = await loadControllerConfig(write(CONTROLLER));
    expect(c).toEqual({
      root: "/var/aegir/platforms",
      stateDir: "/var/lib/quick-migrate",
      dataDirs: ["files", "private/files"],
      insecure: true,
      fronts: [
        { name: "web1", address: "127.0.0.1:7101", local: false },
        { name: "web2", address: "[::1]:7102", local: false },
      ],
      hooks: {},
      rsync: "rsync",
      timeouts: { hello: 10, preflight: 60, apply: 300, rsync: 7200, unresponsive: 30, hook: 3600 },
      logLevel: "warn",
      fanOut: { calls: 64, rsync: 8 },
    });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.fronts[0])).toBe(true);
  });

  it("keeps what the file sets: tls, hooks, data dirs, a local front", async () => {
    const c = await loadControllerConfig(
      write(`
root: /srv/platforms
stateDir: /srv/state
tls: { ca: /etc/qm/ca.pem, cert: /etc/qm/c.pem, key: /etc/qm/c.key }
dataDirs: [files, private/files, private/temp]
logLevel: debug
fronts:
  - { name: self, address: "localhost:7101", local: true }
  - { name: web2, address: "web2.example.net:7101" }
hooks:
  dbDump: [drush, "@{site}", sql-dump, "--result-file={dump}"]
  maintenanceOn: [drush, "@{site}", vset, maintenance_mode, "1"]
`),
    );
    expect(c.tls).toEqual({ ca: "/etc/qm/ca.pem", cert: "/etc/qm/c.pem", key: "/etc/qm/c.key" });
    expect(c.dataDirs).toEqual(["files", "private/files", "private/temp"]);
    expect(c.logLevel).toBe("debug");
    expect(c.fronts.map((f) => f.local)).toEqual([true, false]);
    expect(c.hooks.dbDump).toEqual(["drush", "@{site}", "sql-dump", "--result-file={dump}"]);
  });

  it("takes timeouts.unresponsive in seconds, at least 1, the other timeouts keeping their defaults", async () => {
    const c = await loadControllerConfig(write(`${CONTROLLER}timeouts: { unresponsive: 3 }\n`));
    expect(c.timeouts).toEqual({ hello: 10, preflight: 60, apply: 300, rsync: 7200, unresponsive: 3, hook: 3600 });
    const file = write(`${CONTROLLER}timeouts: { unresponsive: 0.5 }\n`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/timeouts\.unresponsive: /);
  });

  it("rejects an unknown top-level key, naming it", async () => {
    const file = write(`${CONTROLLER}colour: blue\n`);
    const err = await configError(loadControllerConfig(file));
    const lines = problemLines(err, file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("colour");
  });

  it("rejects an unknown key inside a front, naming the front and the key", async () => {
    const file = write(CONTROLLER.replace("address: 127.0.0.1:7101", "address: 127.0.0.1:7101\n    port: 7101"));
    const err = await configError(loadControllerConfig(file));
    const lines = problemLines(err, file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("fronts.0");
    expect(lines[0]).toContain("port");
  });

  it("rejects unknown hooks and unknown keys inside tls", async () => {
    const file = write(
      CONTROLLER.replace("insecure: true", "tls: { ca: /a, cert: /b, key: /c, password: x }") + "hooks:\n  cacheClear: [drush, cc]\n",
    );
    const err = await configError(loadControllerConfig(file));
    const text = problemLines(err, file).join("\n");
    expect(text).toContain("password");
    expect(text).toContain("cacheClear");
  });

  it("lists several problems at once, each line with the file path and the key", async () => {
    const file = write(`
root: var/aegir/platforms
stateDir: /var/lib/quick-migrate
insecure: true
frobnicate: 1
fronts:
  - name: web1
    address: web1-without-port
`);
    const err = await configError(loadControllerConfig(file));
    const lines = problemLines(err, file);
    expect(lines).toHaveLength(3);
    expect(lines.find((l) => l.includes(": root: "))).toMatch(/absolute/);
    expect(lines.find((l) => l.includes(": fronts.0.address: "))).toMatch(/host:port/);
    expect(lines.find((l) => l.includes("frobnicate"))).toBeDefined();
  });

  it("reports missing required keys of an empty file together", async () => {
    const file = write("");
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    for (const key of ["root", "stateDir", "fronts"]) expect(lines.some((l) => l.startsWith(`${file}: ${key}: `)), key).toBe(true);
  });

  it("refuses a front listed twice", async () => {
    const file = write(CONTROLLER.replace("name: web2", "name: web1"));
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([expect.stringMatching(/fronts\.1\.name: .*web1.*twice/)]);
  });

  it("refuses a port above 65535", async () => {
    const file = write(CONTROLLER.replace('"[::1]:7102"', '"[::1]:99999"'));
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([expect.stringMatching(/fronts\.1\.address: port must be at most 65535/)]);
  });

  it("accepts the example configuration shipped in deploy/", async () => {
    const config = await loadControllerConfig(new URL("../../deploy/controller.example.yaml", import.meta.url).pathname);
    expect(config.fronts.map((f) => f.name)).toEqual(["web1", "web2"]);
    const agent = await loadAgentConfig(new URL("../../deploy/agent.example.yaml", import.meta.url).pathname);
    expect(agent.root).toBe("/var/aegir/platforms");
  });

  it("refuses two local fronts", async () => {
    const file = write(`
root: /r
stateDir: /s
insecure: true
fronts:
  - { name: a, address: "127.0.0.1:1", local: true }
  - { name: b, address: "127.0.0.1:2", local: true }
`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([expect.stringMatching(/: fronts: .*local/)]);
  });

  it("refuses a front named hostmaster", async () => {
    const file = write(CONTROLLER.replace("name: web2", "name: hostmaster"));
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([expect.stringMatching(/fronts\.1\.name: .*hostmaster/)]);
  });

  it("refuses an unknown hook placeholder, naming the hook and the placeholder", async () => {
    const file = write(`${CONTROLLER}hooks:\n  dbDump: [drush, "@{site}", "--result-file={nope}"]\n`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("hooks.dbDump");
    expect(lines[0]).toContain("{nope}");
  });

  it("leaves braces that are not a {name} alone (JSON or code in a hook argument)", async () => {
    const file = write(`${CONTROLLER}hooks:\n  deploy: [drush, "@{newSite}", php-eval, '{ "a": 1 }', "{a b}"]\n`);
    const c = await loadControllerConfig(file);
    expect(c.hooks.deploy).toEqual(["drush", "@{newSite}", "php-eval", '{ "a": 1 }', "{a b}"]);
  });

  it.each([
    ["updatedb", `  updatedb: [drush, "@{newSite}", updatedb, "-y"]\n`],
    ["dbRestore", `  dbRestore: [drush, "@{site}", sql-query, "--file={dump}"]\n`],
  ])("refuses %s without dbDump (a rollback would have no dump to restore), one line naming file and key", async (key, line) => {
    const file = write(`${CONTROLLER}hooks:\n  deploy: [drush, "@{newSite}", provision-verify]\n${line}`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([`${file}: hooks.${key}: needs hooks.dbDump: a rollback restores the database from the dump it writes`]);
  });

  it("refuses both updatedb and dbRestore without dbDump, each on its line; with dbDump they load", async () => {
    const hooks = `  updatedb: [drush, "@{newSite}", updatedb]\n  dbRestore: [drush, "@{site}", sql-query, "--file={dump}"]\n`;
    const file = write(`${CONTROLLER}hooks:\n${hooks}`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines.map((l) => l.split(": ")[1])).toEqual(["hooks.updatedb", "hooks.dbRestore"]);
    const ok = write(`${CONTROLLER}hooks:\n${hooks}  dbDump: [drush, "@{site}", sql-dump, "--result-file={dump}"]\n`, "ok.yaml");
    expect((await loadControllerConfig(ok)).hooks.updatedb).toEqual(["drush", "@{newSite}", "updatedb"]);
  });

  it("refuses a hook with no command", async () => {
    const file = write(`${CONTROLLER}hooks:\n  deploy: []\n`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines[0]).toContain("hooks.deploy");
  });

  it("timeouts.hook: seconds, 3600 when left out (also when other timeouts are set), a positive number", async () => {
    expect((await loadControllerConfig(write(`${CONTROLLER}timeouts: { apply: 30 }\n`))).timeouts).toEqual({ hello: 10, preflight: 60, apply: 30, rsync: 7200, unresponsive: 30, hook: 3600 });
    expect((await loadControllerConfig(write(`${CONTROLLER}timeouts: { hook: 1.5 }\n`))).timeouts.hook).toBe(1.5);
    for (const bad of ["0", "-5", "an hour"]) {
      const file = write(`${CONTROLLER}timeouts: { hook: ${bad} }\n`);
      const lines = problemLines(await configError(loadControllerConfig(file)), file);
      expect(lines, bad).toEqual([expect.stringContaining(": timeouts.hook: ")]);
    }
  });

  it("refuses nested or invalid data dirs", async () => {
    const file = write(`${CONTROLLER}dataDirs: [files, files/x, ../y]\n`);
    const lines = problemLines(await configError(loadControllerConfig(file)), file);
    expect(lines).toEqual([expect.stringMatching(/: dataDirs: /)]);
  });

  it("refuses insecure mode towards a front that is not on loopback, naming it", async () => {
    const file = write(CONTROLLER.replace("127.0.0.1:7101", "10.0.0.1:7101"));
    expect(problemLines(await configError(loadControllerConfig(file)), file)).toEqual([
      expect.stringMatching(/: fronts\.0\.address: insecure \(plaintext\) mode is only allowed to a loopback address, not 10\.0\.0\.1:7101/),
    ]);
  });

  it("needs tls unless insecure, and refuses both", async () => {
    const noTls = write(CONTROLLER.replace("insecure: true\n", ""), "a.yaml");
    expect(problemLines(await configError(loadControllerConfig(noTls)), noTls)).toEqual([expect.stringMatching(/: tls: /)]);
    const both = write(CONTROLLER.replace("insecure: true", "insecure: true\ntls: { ca: /a, cert: /b, key: /c }"), "b.yaml");
    expect(problemLines(await configError(loadControllerConfig(both)), both)).toEqual([expect.stringMatching(/: insecure: /)]);
  });

  it("a missing file is CONFIG_INVALID naming the file", async () => {
    const file = path.join(tmp, "nope.yaml");
    const err = await configError(loadControllerConfig(file));
    expect(err.message).toContain(file);
    expect(err.message).toContain("ENOENT");
    expect(err.context.path).toBe(file);
  });

  it("a YAML syntax error is CONFIG_INVALID naming the file", async () => {
    const file = write("root: /r\nfronts: [ { name: web1\n  stateDir: : :\n");
    const err = await configError(loadControllerConfig(file));
    expect(err.message.startsWith(`${file}: `)).toBe(true);
    expect(err.message).toMatch(/YAML/);
  });

  it("a file that is not a mapping is refused", async () => {
    const file = write("- just\n- a list\n");
    const err = await configError(loadControllerConfig(file));
    problemLines(err, file);
  });
});

const AGENT = `
listen: 127.0.0.1:7101
root: /var/aegir/platforms
stateDir: /var/lib/quick-migrate-agent
insecure: true
`;

describe("loadAgentConfig", () => {
  it("reads a valid file and fills in the defaults", async () => {
    expect(await loadAgentConfig(write(AGENT))).toEqual({
      listen: "127.0.0.1:7101",
      root: "/var/aegir/platforms",
      stateDir: "/var/lib/quick-migrate-agent",
      insecure: true,
      allowedClients: [],
      maxConcurrentOps: 16,
      timeouts: { unresponsive: 30 },
      operationTimeout: 300,
      minFreeBytes: 1073741824,
      healthInterval: 10,
      stopTimeout: 60,
      dataDirs: ["files", "private/files"],
      keepFinished: 30,
      logLevel: "info",
      allowRoot: false,
    });
  });

  it("reads the health and stop settings, refusing what makes no sense, all at once", async () => {
    const c = await loadAgentConfig(write(`${AGENT}minFreeBytes: 0\nhealthInterval: 0.5\nstopTimeout: 0\n`));
    expect([c.minFreeBytes, c.healthInterval, c.stopTimeout]).toEqual([0, 0.5, 0]);
    const file = write(`${AGENT}minFreeBytes: 1.5\nhealthInterval: 0\nstopTimeout: -1\n`);
    expect(problemLines(await configError(loadAgentConfig(file)), file)).toEqual([
      expect.stringMatching(/: minFreeBytes: /),
      expect.stringMatching(/: healthInterval: /),
      expect.stringMatching(/: stopTimeout: /),
    ]);
  });

  it("takes timeouts.unresponsive (the rsync idle bound) in seconds, at least 1, and no other timeout", async () => {
    expect((await loadAgentConfig(write(`${AGENT}timeouts: { unresponsive: 5 }\n`))).timeouts).toEqual({ unresponsive: 5 });
    for (const bad of ["{ unresponsive: 0.5 }", "{ unresponsive: x }", "{ hook: 3 }"]) {
      const file = write(`${AGENT}timeouts: ${bad}\n`);
      expect(problemLines(await configError(loadAgentConfig(file)), file), bad).toEqual([expect.stringMatching(/: timeouts(\.unresponsive)?: /)]);
    }
  });

  it("reads the data dirs it protects and how long ended migrations are kept", async () => {
    const c = await loadAgentConfig(write(`${AGENT}dataDirs: [files, private/files, private/temp]\nkeepFinished: 7\n`));
    expect(c.dataDirs).toEqual(["files", "private/files", "private/temp"]);
    expect(c.keepFinished).toBe(7);
  });

  it("refuses an empty data-dir list, a nested one, more than 64, and a negative keepFinished, all at once", async () => {
    const empty = write(`${AGENT}dataDirs: []\nkeepFinished: -1\n`, "empty.yaml");
    const lines = problemLines(await configError(loadAgentConfig(empty)), empty);
    expect(lines).toEqual([expect.stringMatching(/: dataDirs: /), expect.stringMatching(/: keepFinished: /)]);
    const nested = write(`${AGENT}dataDirs: [files, files/x]\n`, "nested.yaml");
    expect(problemLines(await configError(loadAgentConfig(nested)), nested)).toEqual([expect.stringMatching(/: dataDirs: data dir files\/x lies inside data dir files/)]);
    const many = write(`${AGENT}dataDirs: [${Array.from({ length: 65 }, (_, i) => `d${i}`).join(", ")}]\n`, "many.yaml");
    expect(problemLines(await configError(loadAgentConfig(many)), many)).toEqual([expect.stringMatching(/: dataDirs: /)]);
  });

  it("refuses insecure mode on a non-loopback address, naming listen", async () => {
    const file = write(AGENT.replace("127.0.0.1:7101", '"10.1.2.3:7101"'));
    const lines = problemLines(await configError(loadAgentConfig(file)), file);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(": listen: ");
    expect(lines[0]).toContain("10.1.2.3:7101");
  });

  it.each(["0.0.0.0:7101", "[::]:7101", "agent.example.net:7101", "127.0.0.1.nip.io:7101"])("refuses insecure mode on %s", async (listen) => {
    const file = write(AGENT.replace("127.0.0.1:7101", `"${listen}"`));
    const lines = problemLines(await configError(loadAgentConfig(file)), file);
    expect(lines[0]).toContain(": listen: ");
  });

  it.each(["localhost:7101", "127.0.0.1:7101", "127.1.2.3:0", "[::1]:7101"])("allows insecure mode on loopback %s", async (listen) => {
    const c = await loadAgentConfig(write(AGENT.replace("127.0.0.1:7101", `"${listen}"`)));
    expect(c.listen).toBe(listen);
  });

  it("allows any address with tls", async () => {
    const c = await loadAgentConfig(write(AGENT.replace("127.0.0.1:7101", '"10.1.2.3:7101"').replace("insecure: true", "tls: { ca: /a, cert: /b, key: /c }\nallowedClients: [hostmaster]")));
    expect(c.insecure).toBe(false);
    expect(c.allowedClients).toEqual(["hostmaster"]);
  });

  it("with tls, allowedClients must name at least one client", async () => {
    const file = write(AGENT.replace("insecure: true", "tls: { ca: /a, cert: /b, key: /c }"));
    expect(problemLines(await configError(loadAgentConfig(file)), file)).toEqual([expect.stringMatching(/: allowedClients: /)]);
  });

  it("lists every problem at once: unknown key, relative paths, bad listen", async () => {
    const file = write("listen: nowhere\nroot: platforms\nstateDir: ./state\ninsecure: true\nfronts: []\n");
    const lines = problemLines(await configError(loadAgentConfig(file)), file);
    expect(lines).toHaveLength(4);
    for (const key of ["listen", "root", "stateDir"]) expect(lines.some((l) => l.startsWith(`${file}: ${key}: `)), key).toBe(true);
    expect(lines.some((l) => l.includes("fronts"))).toBe(true);
  });

  it("a missing file is CONFIG_INVALID naming the file", async () => {
    const file = path.join(tmp, "missing", "agent.yaml");
    const err = await configError(loadAgentConfig(file));
    expect(err.message).toContain(file);
  });

  it("a YAML syntax error is CONFIG_INVALID naming the file", async () => {
    const file = write('listen: "127.0.0.1:7101\nroot: /r\n');
    const err = await configError(loadAgentConfig(file));
    expect(err.message.startsWith(`${file}: `)).toBe(true);
  });
});

describe("isLoopback", () => {
  it.each([
    ["localhost:1", true],
    ["127.0.0.1:1", true],
    ["127.255.0.9:1", true],
    ["[::1]:1", true],
    ["10.1.2.3:1", false],
    ["0.0.0.0:1", false],
    ["[::]:1", false],
    ["128.0.0.1:1", false],
    ["127.0.0.1.evil.example:1", false],
    ["localhost.evil.example:1", false],
  ])("%s → %s", (hp, expected) => {
    expect(isLoopback(hp)).toBe(expected);
  });
});
