// Bundles the compiled entry points (dist/controller/main.js, dist/agent/main.js, dist/shared/noDebugger.js)
// with esbuild into dist/bundle/, which bin/* run: Node then loads a few files instead of some 150 (zod
// alone is 95 modules), which is most of what a command costs before it does anything.
//
//   node scripts/bundle.mjs [--dist DIR]      (npm run build runs it; release.mjs on its stage's dist/)
//
// Bundled: our code and every package it imports (grpc-js, pino, execa, zod, yaml…): Node loading some
// 230 files of node_modules one by one, ES modules resolved each, cost a `migrate` about 70 ms. Left out
// (EXTERNAL): what the agent loads only at its first reflection call, which reads .proto files beside
// its own code; @grpc/reflection then requires its own copy of grpc-js from node_modules, which it uses
// only for status codes and loadPackageDefinition (the server and its calls stay the bundled copy's).
// The code paths of bundled packages that read files beside their code (grpc-js's channelz and ORCA
// services, pino's transports) are never taken by quick-migrate.
// Split into chunks along the dynamic imports, so that `status` does not parse what `migrate` needs.
import { rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { build } from "esbuild";

const top = new URL("..", import.meta.url).pathname;
const args = process.argv.slice(2);
let dist = join(top, "dist");
while (args.length > 0) {
  const arg = args.shift();
  if (arg === "--dist" && args.length > 0) dist = resolve(args.shift());
  else {
    console.error(`bundle: unknown or incomplete option ${arg}\nusage: node scripts/bundle.mjs [--dist DIR]`);
    process.exit(2);
  }
}

/** left as imports of node_modules: loaded only by the agent's first reflection call, and reading .proto files beside their own code */
const EXTERNAL = new Set(["@grpc/reflection", "@grpc/proto-loader", "protobufjs"]);

const outdir = join(dist, "bundle");
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: { controller: join(dist, "controller/main.js"), agent: join(dist, "agent/main.js"), noDebugger: join(dist, "shared/noDebugger.js") },
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  // chunks named by their content: a stale one is never picked up by a newer entry
  chunkNames: "chunk-[hash]",
  plugins: [
    {
      name: "external-packages",
      setup(b) {
        // a bare specifier (a package) stays an import unless it is one of BUNDLED
        b.onResolve({ filter: /^[^./]/ }, (a) => {
          if (a.path.startsWith("node:")) return { external: true };
          const name = a.path.startsWith("@") ? a.path.split("/").slice(0, 2).join("/") : a.path.split("/")[0];
          return EXTERNAL.has(name) ? { external: true } : undefined;
        });
      },
    },
  ],
  // yaml is CommonJS and requires Node's builtins: an ES module has no `require` of its own
  banner: { js: 'import { createRequire as __qmCreateRequire } from "node:module";\nconst require = __qmCreateRequire(import.meta.url);' },
  legalComments: "eof",
  logLevel: "warning",
});
