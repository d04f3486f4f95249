// `npm run startup [-- --runs N] [--plaintext] [--json]`: the fixed cost of starting quick-migrate's
// processes through bin/ (see scripts/lib/startup.ts), as a table or one JSON object.
import { formatStartup, measureStartup } from "./lib/startup.js";

const args = process.argv.slice(2);
let runs: number | undefined;
let tls: boolean | undefined;
let json = false;
while (args.length > 0) {
  const arg = args.shift();
  if (arg === "--runs" && args[0] !== undefined && /^\d+$/.test(args[0])) runs = Number(args.shift());
  else if (arg === "--plaintext") tls = false;
  else if (arg === "--json") json = true;
  else {
    console.error(`startup: unknown or incomplete option ${arg}\nusage: npm run startup [-- --runs N] [--plaintext] [--json]`);
    process.exit(2);
  }
}
const figures = await measureStartup({ ...(runs !== undefined ? { runs } : {}), ...(tls !== undefined ? { tls } : {}) });
console.log(json ? JSON.stringify(figures) : formatStartup(figures).join("\n"));
