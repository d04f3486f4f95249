// The QmError a promise rejects with (the test fails if it resolves, or rejects with anything else).
import { expect } from "vitest";
import { QmError } from "../../shared/errors.js";

export async function rejection(p: Promise<unknown>): Promise<QmError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, "expected a QmError").toBeInstanceOf(QmError);
  return err as QmError;
}
