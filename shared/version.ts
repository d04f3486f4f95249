// Versions both sides compare at preflight. Bump PROTOCOL_VERSION on any incompatible change of proto/ or of agent behaviour.
import { readFileSync } from "node:fs";

export const PROTOCOL_VERSION = 1;

export const PACKAGE_VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;
