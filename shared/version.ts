// Versions both sides compare at preflight. Bump PROTOCOL_VERSION on any incompatible change of proto/ or of agent behaviour.
import { readFileSync } from "node:fs";

export const PROTOCOL_VERSION = 2;

/** This package's version, from its package.json: one folder up from the sources, two from dist/. */
function packageVersion(): string {
  for (const rel of ["../../package.json", "../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (pkg.name === "quick-migrate" && pkg.version) return pkg.version;
    } catch {
      // not this one
    }
  }
  throw new Error("quick-migrate: package.json not found beside the code");
}

export const PACKAGE_VERSION: string = packageVersion();
