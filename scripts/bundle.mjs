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
// The agent: ES modules split into chunks along the dynamic imports, so that a command does not parse
// what another needs. The controller: one CommonJS script (controller-main.cjs), which its entry
// (controller.js, from controller/start.ts) runs with a V8 code cache: a cached script's size costs little,
// and Node 20 caches no ES module's code.
import { readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
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

const externalPackages = {
  name: "external-packages",
  setup(b) {
    // a bare specifier (a package) stays an import unless it is one of BUNDLED
    b.onResolve({ filter: /^[^./]/ }, (a) => {
      if (a.path.startsWith("node:")) return { external: true };
      const name = a.path.startsWith("@") ? a.path.split("/").slice(0, 2).join("/") : a.path.split("/")[0];
      return EXTERNAL.has(name) ? { external: true } : undefined;
    });
  },
};
// Whitespace and syntax minified, names kept (a stack trace still names its functions and an error's type
// its class): V8 holds each loaded file's whole source in the heap for as long as the process lives, and
// the agent's loaded sources made up 2 of its 10 MB of heap; minified, the idle agent holds about 1.5 MB less.
const common = {
  bundle: true,
  platform: "node",
  target: "node20",
  plugins: [externalPackages],
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: "eof",
  logLevel: "warning",
};

await build({
  ...common,
  entryPoints: { controller: join(dist, "controller/start.js"), agent: join(dist, "agent/main.js"), noDebugger: join(dist, "shared/noDebugger.js") },
  outdir,
  splitting: true,
  format: "esm",
  // chunks named by their content: a stale one is never picked up by a newer entry
  chunkNames: "chunk-[hash]",
  // yaml is CommonJS and requires Node's builtins: an ES module has no `require` of its own
  banner: { js: 'import { createRequire as __qmCreateRequire } from "node:module";\nconst require = __qmCreateRequire(import.meta.url);' },
});

await build({
  ...common,
  entryPoints: [join(dist, "controller/main.js")],
  outfile: join(outdir, "controller-main.cjs"),
  format: "cjs",
  // strict, as the ES modules it is made of (and as the ESM bundle ran its packages)
  banner: { js: '"use strict";\nconst __qmImportMetaUrl = require("node:url").pathToFileURL(__filename).href;' },
  // the code's own import.meta.url (reading package.json beside it): this file's, as in the ESM bundle
  define: { "import.meta.url": "__qmImportMetaUrl" },
});
// ASCII throughout: esbuild escapes the code's own non-ASCII characters, not those of the comments it
// keeps (the license texts at the end); escaped there too, V8 holds a file's source as one byte a character,
// not two (yaml's and zod's chunk held 0.9 MB for its 0.45), and controller/start.ts reads the controller's
// script as one byte a character instead of decoding it as UTF-8 (5-7 ms)
for (const name of readdirSync(outdir)) {
  const file = join(outdir, name);
  writeFileSync(file, readFileSync(file, "utf8").replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`));
}
