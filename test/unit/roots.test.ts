// Which hosts of a migration share a root: each collision reported once, at the later host, naming both
// and the fix; a local front must serve the hostmaster's root. Pure.
import { describe, expect, it } from "vitest";
import { type FrontRoot, type MasterRoot, rootProblems } from "../../controller/roots.js";

const A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C = "cccccccccccccccccccccccccccccccc";
const M = "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm";

const master = (rootId: string | undefined): MasterRoot => ({ path: "/var/aegir/platforms", rootId });
const front = (name: string, rootId: string, local = false): FrontRoot => ({ name, rootId, local });

function all(m: MasterRoot, fronts: FrontRoot[]) {
  return Object.fromEntries(fronts.map((f) => [f.name, rootProblems(f.name, m, fronts).map((p) => p.code)]));
}

describe("rootProblems", () => {
  it("accepts fronts with roots of their own, and a local front on the hostmaster's root", () => {
    expect(all(master(undefined), [front("web1", A), front("web2", B)])).toEqual({ web1: [], web2: [] });
    expect(all(master(M), [front("master", M, true), front("web1", A)])).toEqual({ master: [], web1: [] });
  });

  it("two fronts on one root: refused once, at the later, naming both and the fix", () => {
    const fronts = [front("web1", A), front("web2", B), front("web3", A)];
    expect(all(master(undefined), fronts)).toEqual({ web1: [], web2: [], web3: ["ROOT_SHARED"] });
    const [p] = rootProblems("web3", master(undefined), fronts);
    expect(p?.message).toContain(`shares one root with web1 (root id ${A}`);
    expect(p?.message).not.toContain("web3");
    expect(p?.message).toContain("list only one of them under fronts");
    expect(p?.path).toBe(".quick-migrate-root-id");
  });

  it("a front on the hostmaster's root without local: true is refused, saying to mark it local", () => {
    const fronts = [front("web1", A), front("hm", M)];
    expect(all(master(M), fronts)).toEqual({ web1: [], hm: ["ROOT_SHARED"] });
    const message = rootProblems("hm", master(M), fronts)[0]?.message;
    expect(message).toContain("shares one root with the hostmaster, /var/aegir/platforms");
    expect(message).toContain("mark it local: true");
    expect(message).not.toMatch(/\bhm\b/);
  });

  it("a second front on the hostmaster's root beside the local one: remove it", () => {
    const fronts = [front("hm", M, true), front("hm2", M)];
    expect(all(master(M), fronts)).toEqual({ hm: [], hm2: ["ROOT_SHARED"] });
    expect(rootProblems("hm2", master(M), fronts)[0]?.message).toContain("hm is already the hostmaster's front: remove this front from fronts");
  });

  it("a front marked local whose root is not the hostmaster's is refused, with or without a hostmaster id", () => {
    for (const m of [master(undefined), master(M)]) {
      const fronts = [front("web1", A, true), front("web2", B)];
      expect(all(m, fronts)).toEqual({ web1: ["ROOT_NOT_LOCAL"], web2: [] });
      const message = rootProblems("web1", m, fronts)[0]?.message;
      expect(message).toContain("marked local: true, but its agent's root is not the hostmaster's root /var/aegir/platforms");
      expect(message).not.toContain("web1");
      expect(message).toContain("remove local: true");
    }
  });

  it("an agent that reports no root id is incompatible; one that reports junk is refused", () => {
    expect(all(master(undefined), [front("web1", ""), front("web2", "../../x")])).toEqual({ web1: ["INCOMPATIBLE"], web2: ["ROOT_ID_INVALID"] });
  });

  it("a front that did not answer Hello is not compared (its own preflight fails)", () => {
    expect(rootProblems("web9", master(undefined), [front("web1", A)])).toEqual([]);
    expect(all(master(undefined), [front("web1", C), front("web2", C)]).web2).toEqual(["ROOT_SHARED"]);
  });
});
