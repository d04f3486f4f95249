// The agent's metrics endpoint: GET /metrics in Prometheus's text format, plain HTTP (node:http) on
// metrics.listen; any other path is 404, another method on /metrics 405. Slow or idle clients are cut off.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import type { AgentMetrics } from "./metrics.js";

const REQUEST_TIMEOUT_MS = 10_000;
/** Prometheus scrapes one at a time; a few more leave room for a curl by hand */
const MAX_CONNECTIONS = 8;

export class MetricsEndpoint {
  private constructor(
    private readonly server: Server,
    /** host:port actually bound (the port may have been 0) */
    readonly address: string,
  ) {}

  /** Binds `listen` (host:port) and serves `metrics`; rejects when the address cannot be bound. */
  static async listen(listen: string, metrics: AgentMetrics, log: Logger): Promise<MetricsEndpoint> {
    const server = createServer((req, res) => void serve(req, res, metrics, log));
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.headersTimeout = REQUEST_TIMEOUT_MS;
    server.maxConnections = MAX_CONNECTIONS;
    const { host, port } = splitHostPort(listen);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => log.warn({ err }, "metrics endpoint error"));
    const bound = server.address() as AddressInfo;
    const address = `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`;
    return new MetricsEndpoint(server, address);
  }

  /** Stops listening and ends open connections (a scrape in progress is cut). */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function serve(req: IncomingMessage, res: ServerResponse, metrics: AgentMetrics, log: Logger): Promise<void> {
  const path = (req.url ?? "").split("?")[0];
  if (path !== "/metrics") {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found: the metrics are at /metrics\n");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" }).end("method not allowed\n");
    return;
  }
  try {
    const { contentType, body } = await metrics.scrape();
    res.writeHead(200, { "content-type": contentType });
    res.end(req.method === "HEAD" ? undefined : body);
  } catch (err) {
    log.warn({ err: describeError(err) }, "metrics scrape failed");
    res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("metrics could not be collected\n");
  }
}

/** `host:port`, `[v6]:port` → the host without brackets and the port. */
function splitHostPort(hostPort: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(hostPort);
  if (!m) throw new Error(`not host:port: ${hostPort}`);
  return { host: (m[1] ?? "").replace(/^\[|\]$/g, ""), port: Number(m[2]) };
}
