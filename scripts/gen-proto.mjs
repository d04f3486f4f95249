// Regenerates shared/generated from proto/ with buf and the local ts-proto plugin (offline).
// With --check, generates into a temporary folder and fails if the committed code differs.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, cpSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const top = new URL("..", import.meta.url).pathname;
const target = join(top, "shared/generated");
const check = process.argv.includes("--check");
const out = mkdtempSync(join(tmpdir(), "qm-proto-"));

try {
  execFileSync(join(top, "node_modules/.bin/buf"), ["generate", "proto", "--template", "proto/buf.gen.yaml", "--output", out], {
    cwd: top,
    stdio: "inherit",
  });
  // buf writes below <out>/shared/generated, the template's `out`
  const generated = join(out, "shared/generated");
  if (check) {
    const drift = compare(generated, target);
    if (drift.length > 0) {
      console.error(`generated protobuf code has drifted from proto/ (run \`npm run proto\`): ${drift.join(", ")}`);
      process.exit(1);
    }
    console.log("generated protobuf code matches proto/");
  } else {
    for (const f of listFiles(target)) if (f.endsWith(".ts")) rmSync(join(target, f));
    cpSync(generated, target, { recursive: true });
    console.log(`regenerated ${relative(top, target)}`);
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

function listFiles(dir, prefix = "") {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? listFiles(join(dir, e.name), join(prefix, e.name)) : [join(prefix, e.name)],
  );
}

function compare(fresh, committed) {
  const a = listFiles(fresh).filter((f) => f.endsWith(".ts"));
  const b = listFiles(committed).filter((f) => f.endsWith(".ts"));
  const drift = [...a.filter((f) => !b.includes(f)), ...b.filter((f) => !a.includes(f))];
  for (const f of a.filter((f) => b.includes(f))) {
    if (!readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f)))) drift.push(f);
  }
  return drift;
}
