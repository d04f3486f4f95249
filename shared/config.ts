// Loading a YAML config file against a zod schema: every problem reported at once, as "file: key: message".
import { readFile } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { parse } from "yaml";
import * as z from "zod/mini";
import en from "zod/v4/locales/en.js";
import { QmError } from "./errors.js";

// zod's mini API: the checks and (with its English locale) the messages of the classic one, but only the
// parts used are bundled; the classic API brings all of zod, some 1.5 MB of every process's heap. A config
// is checked once or twice per process: zod's compiled object parsers (made with new Function at the first
// parse) cost about as much to make as they save here; without them the same checks run.
z.config({ ...en(), jitless: true });

export type ProblemSink = (key: string, message: string) => void;

export async function loadYamlConfig<S extends z.ZodMiniType>(
  file: string,
  schema: S,
  extraChecks?: (config: z.infer<S>, problem: ProblemSink) => void,
): Promise<Readonly<z.infer<S>>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    throw new QmError("CONFIG_INVALID", `${file}: cannot read config: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { path: file });
  }
  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (err) {
    throw new QmError("CONFIG_INVALID", `${file}: not valid YAML: ${(err as Error).message.split("\n")[0]}`, { path: file });
  }
  return checkConfig(file, raw, schema, extraChecks);
}

export function checkConfig<S extends z.ZodMiniType>(
  file: string,
  raw: unknown,
  schema: S,
  extraChecks?: (config: z.infer<S>, problem: ProblemSink) => void,
): Readonly<z.infer<S>> {
  const problems: string[] = [];
  const result = schema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const key = issue.path.length > 0 ? issue.path.join(".") : "(top level)";
      problems.push(`${file}: ${key}: ${issue.message}`);
    }
  } else if (extraChecks) {
    extraChecks(result.data, (key, message) => problems.push(`${file}: ${key}: ${message}`));
  }
  if (problems.length > 0) {
    throw new QmError("CONFIG_INVALID", problems.join("\n"), { path: file });
  }
  return deepFreeze(result.data as z.infer<S>);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Plaintext is for development only, and only on loopback: localhost, 127.0.0.0/8 or ::1. */
export function isLoopback(hostPort: string): boolean {
  const host = hostPort.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

// ---- pieces both binaries' schemas are made of ------------------------------------------------------

export const hostPort = z.string().check(
  z.regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, "must be host:port"),
  z.refine((v) => !(Number(/:(\d+)$/.exec(v)?.[1] ?? 0) > 65535), "port must be at most 65535"),
);

export const absPath = z.string().check(z.refine(isAbsolute, "must be an absolute path"));

/** PEM files of mutual TLS: the CA, and this side's certificate and key. */
export const tlsFiles = z.strictObject({ ca: absPath, cert: absPath, key: absPath });

export const logLevel = z.enum(["fatal", "error", "warn", "info", "debug", "trace"]);

/** TLS unless plaintext is asked for explicitly, never both. */
export function checkTransport(c: { insecure: boolean; tls?: unknown }, problem: ProblemSink): void {
  if (!c.insecure && !c.tls) problem("tls", "required unless insecure: true");
  if (c.insecure && c.tls) problem("insecure", "insecure: true and tls cannot both be set");
}
