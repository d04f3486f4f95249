// Work started side by side, answered as if it had been done one part after the other.

/**
 * Awaits every promise, started together (the thread pool runs their system calls side by side), and
 * answers as if they had been awaited one after the other: the first rejection in the list is thrown,
 * once every one of them is over (none is left running behind the caller's back).
 */
export async function allInOrder<T extends readonly unknown[]>(promises: { readonly [K in keyof T]: Promise<T[K]> }): Promise<T> {
  const settled = await Promise.allSettled(promises);
  for (const r of settled) if (r.status === "rejected") throw r.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<unknown>).value) as unknown as T;
}
