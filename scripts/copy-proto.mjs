// Part of `npm run build`: copies proto/**/*.proto to dist/proto/, where the agent loads its schema for
// gRPC reflection (agent/reflection.ts), so that an install of dist/ without the sources still has it.
import { cpSync, rmSync } from "node:fs";

const top = new URL("..", import.meta.url).pathname;
rmSync(`${top}dist/proto`, { recursive: true, force: true });
cpSync(`${top}proto`, `${top}dist/proto`, { recursive: true, filter: (src) => !/\.ya?ml$/.test(src) });
