/**
 * Headless Chromium for the feature-page tests: Debian's `chromium` package driven by
 * playwright-core (which ships no browser of its own). `SAEGATE_CHROMIUM` points at another binary.
 *
 * Browser suites skip only on a developer machine without Chromium. Under CI (`CI` set, as
 * .ci/run's environment does) Chromium is required: .ci/run installs it, so a missing browser
 * there is a broken setup and the suite fails, saying so, instead of quietly skipping.
 */
import fs from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** The Chromium binary the tests launch. */
export const chromiumPath = process.env.SAEGATE_CHROMIUM ?? '/usr/bin/chromium';

/** True when running under CI: `CI` set to anything but empty, `0` or `false`. */
export const isCi = ((value) => value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false')(process.env.CI);

/** True when the Chromium binary exists and is executable. */
export function hasChromium(): boolean {
  try {
    fs.accessSync(chromiumPath, fs.constants.X_OK);
    return fs.statSync(chromiumPath).isFile();
  } catch {
    return false;
  }
}

/** Browser suites skip when this is true: no Chromium, and not under CI. */
export const skipBrowserTests = !hasChromium() && !isCi;

/**
 * A suite title that carries the skip reason when browser tests are skipped (vitest's skipIf has
 * no reason of its own).
 */
export function needsChromium(title: string): string {
  return skipBrowserTests ? `${title} [skipped: no Chromium at ${chromiumPath}; install Debian's chromium or set SAEGATE_CHROMIUM]` : title;
}

/**
 * Launches headless Chromium. Flags: no sandbox (containers run as root), no GPU, and no
 * background networking, component updates or sync, which on a closed network would only stall
 * and log errors. Throws, naming the path, when Chromium is missing (under CI: a setup error).
 */
export async function launchChromium(): Promise<Browser> {
  if (!hasChromium()) {
    throw new Error(
      `Chromium is required${isCi ? ' under CI' : ''} but was not found at ${chromiumPath} ` +
        "(.ci/run installs Debian's chromium package; SAEGATE_CHROMIUM overrides the path)",
    );
  }
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
