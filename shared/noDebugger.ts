// Keeps Node's inspector shut in quick-migrate's own processes (issue 13): the first import of each main,
// and preloaded by the bin/ wrappers (`node --import`) so that it runs before anything else is loaded.
// Node opens its inspector on 127.0.0.1:9229 when it gets SIGUSR1 and no handler is installed; whoever
// attaches then runs code as this process's user. An inspector opened another way (--inspect on Node's
// command line) is refused, and NODE_OPTIONS is dropped so that nothing this process starts inherits one.

import { createRequire } from "node:module";

// Ignored: a signal is not an operator's way to debug a migration (rsync, `kill -USR1`, `node inspect -p`).
process.on("SIGUSR1", () => undefined);
// A process that ends by running out of work closes every handle on its way out, this handler's too, and
// a SIGUSR1 then kills it with the signal's default action: its exit code (migrated, rolled back…) is
// lost. process.exit keeps the handler to the end.
process.on("beforeExit", () => process.exit());

// Hooks and rsync get this environment: no --inspect… for a Node hook (the bin/ wrappers unset it even
// before Node reads it).
delete process.env.NODE_OPTIONS;

// (a Node built without the inspector has no node:inspector to load, and nothing to open)
if (process.features.inspector) {
  const { url } = createRequire(import.meta.url)("node:inspector") as typeof import("node:inspector");
  const open = url();
  if (open !== undefined) {
    process.stderr.write(
      `quick-migrate: refusing to run with Node's inspector open on ${new URL(open).host}: any local user could attach and run code as this user; start it without --inspect… (bin/quick-migrate, bin/quick-migrate-agent)\n`,
    );
    process.exit(2);
  }
}
