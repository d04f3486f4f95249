// Bundles the compiled entry points (dist/controller/main.js, dist/agent/main.js, dist/shared/noDebugger.js)
// with esbuild into dist/bundle/, which bin/* run: Node then loads a few files instead of some 150 (zod
// alone is 95 modules), which is most of what a command costs before it does anything.
//
//   node scripts/bundle.mjs [--dist DIR]      (npm run build runs it; release.mjs on its stage's dist/)
//
// Bundled: our code, and the pure JavaScript packages every command loads at its start (zod, yaml,
// commander). Every other package stays an import of node_modules, loaded only by the command that needs
// it (see the dynamic imports in each main), and is the one copy in the process: grpc-js must be, as
// grpc-health-check and @grpc/reflection require it too, and those read files beside their own code.
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

/** bundled into dist/bundle/: loaded by every command at its start, plain JavaScript, no files of their own read at run time */
const BUNDLED = new Set(["zod", "yaml", "commander", "@bufbuild/protobuf", "chokidar", "readdirp"]);

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
          return BUNDLED.has(name) ? undefined : { external: true };
        });
      },
    },
  ],
  // yaml is CommonJS and requires Node's builtins: an ES module has no `require` of its own
  banner: { js: 'import { createRequire as __qmCreateRequire } from "node:module";\nconst require = __qmCreateRequire(import.meta.url);' },
  legalComments: "eof",
  logLevel: "warning",
});
