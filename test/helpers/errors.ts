/**
 * Assertions for the errors saegate throws on purpose: the thrown value is a `SaegateError` with
 * the given code, and its message contains every fragment given.
 */
import { expect } from 'vitest';
import { SaegateError, type SaegateErrorCode } from '../../src/common/errors.js';

function checkSaegateError(caught: unknown, code: SaegateErrorCode, fragments: readonly string[]): SaegateError {
  expect(caught).toBeInstanceOf(SaegateError);
  const error = caught as SaegateError;
  expect(error.code).toBe(code);
  for (const fragment of fragments) expect(error.message).toContain(fragment);
  return error;
}

/** Runs `run`, expects it to throw a `SaegateError` with `code` and every fragment; returns the error. */
export function expectSaegateError(run: () => unknown, code: SaegateErrorCode, ...fragments: string[]): SaegateError {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  return checkSaegateError(caught, code, fragments);
}

/** `expectSaegateError` for a function whose promise should reject. */
export async function expectSaegateRejection(run: () => Promise<unknown>, code: SaegateErrorCode, ...fragments: string[]): Promise<SaegateError> {
  let caught: unknown;
  try {
    await run();
  } catch (error) {
    caught = error;
  }
  return checkSaegateError(caught, code, fragments);
}
