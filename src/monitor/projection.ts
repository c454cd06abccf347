/**
 * Projection monitors (docs/monitor.md, "Projection monitors"): no SAE, one direction. Each tapped
 * residual row x at the monitor's hook becomes one scalar, its projection on the unit direction,
 * p = ⟨x, v⟩ / ‖v‖ (the persona-vector convention: the length of x along v, in residual units, so
 * scaling the vector file changes nothing). The scalars go into the monitor as `EncodedRows` with
 * no active latents (a one-latent "SAE" that never fires, so L0 and FVU are constant and only the
 * projection histogram carries information) and are scored as `projection_psi` against a baseline.
 *
 * Edges: a projection has no natural scale, so its histogram's edges are the baseline's quantiles
 * (`PROJECTION_BINS` equal-mass bins over the recorded rows, each edge halfway between two recorded
 * values so f16 rounding on the tap does not move rows across it), stored in the baseline's
 * `bins.projection`. The live monitor takes its edges from the baseline it is given.
 *
 * Cost on the event loop: d_model multiply-adds per row (f16 rows through a 64 Ki-entry decode
 * table built once), one Float32Array per frame; test/bench/projection.ts measures it.
 */
import { err } from '../common/errors.js';
import { f16BitsToF32 } from '../common/f16.js';
import type { ActivationData } from '../tap/messages.js';
import { readVectorFile } from '../steering/formats.js';
import type { Baseline } from './baseline.js';
import { BaselineRecorder, type BaselineIdentity } from './baseline-recorder.js';
import type { EncodedRows } from './rows.js';

/** Equal-mass bins of a recorded projection histogram (19 interior edges). */
export const PROJECTION_BINS = 20;

/** A projection monitor's width in the monitor: one latent, never active. */
export const PROJECTION_D_SAE = 1;

/** `--projection NAME=FILE[@HOOK]`, parsed. */
export interface ProjectionFlag {
  readonly name: string;
  readonly file: string;
  /** Absent: the file's only direction. */
  readonly hook?: string;
}

/** A loaded projection monitor: its unit direction at one hook. */
export interface ProjectionSpec {
  /** The monitor's id: the `sae` label of its metrics, baselines' `provenance.sae.id`. */
  readonly name: string;
  readonly hook: string;
  readonly dModel: number;
  /** v / ‖v‖. */
  readonly direction: Float32Array;
  /** `vector:<tap id>` of the direction as given (before normalising): a baseline's `provenance.sae.hash`. */
  readonly hash: string;
}

const NAME_PATTERN = /^[A-Za-z0-9_.-]+$/;

/** Parses `NAME=FILE[@HOOK]`; SAEGATE_ERR_CONFIG naming the flag when malformed. */
export function parseProjectionFlag(value: string): ProjectionFlag {
  const eq = value.indexOf('=');
  const name = eq < 0 ? '' : value.slice(0, eq);
  if (!NAME_PATTERN.test(name) || eq === value.length - 1) {
    throw err('SAEGATE_ERR_CONFIG', '--projection', `'${value}' is not NAME=FILE[@HOOK] (NAME: letters, digits, '_', '.', '-')`);
  }
  const rest = value.slice(eq + 1);
  const at = rest.lastIndexOf('@');
  return at > 0 ? { name, file: rest.slice(0, at), hook: rest.slice(at + 1) } : { name, file: rest };
}

/** Unit direction of `values`; SAEGATE_ERR_VECTOR_FILE for a zero or non-finite vector. */
export function unitDirection(values: Float32Array, source: string): Float32Array {
  let sq = 0;
  for (let i = 0; i < values.length; i++) sq += values[i] * values[i];
  const norm = Math.sqrt(sq);
  if (!(norm > 0) || !Number.isFinite(norm)) throw err('SAEGATE_ERR_VECTOR_FILE', source, `the direction has norm ${norm}; a projection needs a non-zero, finite vector`);
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i] / norm;
  return out;
}

/**
 * Reads the flag's vector file and picks its direction: the tensor named by `@HOOK`, or the file's
 * only one. SAEGATE_ERR_VECTOR_FILE naming the file when the hook is missing or ambiguous.
 */
export function loadProjection(flag: ProjectionFlag): ProjectionSpec {
  const vector = readVectorFile(flag.file);
  const hooks = [...vector.hooks.keys()];
  const hook = flag.hook ?? (hooks.length === 1 ? hooks[0] : undefined);
  if (hook === undefined) throw err('SAEGATE_ERR_VECTOR_FILE', flag.file, `it holds directions for ${hooks.join(', ')}; name one with ${flag.name}=${flag.file}@HOOK`);
  const values = vector.hooks.get(hook);
  if (values === undefined) throw err('SAEGATE_ERR_VECTOR_FILE', flag.file, `no direction for hook '${hook}' (it has ${hooks.join(', ')})`);
  return { name: flag.name, hook, dModel: values.length, direction: unitDirection(values, flag.file), hash: `vector:${vector.tapIds.get(hook) ?? vector.id}` };
}

let f16Table: Float32Array | null = null;

/** All 65,536 binary16 values as f32, built on first use (256 KiB). */
export function f16Values(): Float32Array {
  if (f16Table === null) {
    f16Table = new Float32Array(65_536);
    for (let bits = 0; bits < 65_536; bits++) f16Table[bits] = f16BitsToF32(bits);
  }
  return f16Table;
}

/**
 * Projections of `rows` rows of `data` (row-major, `direction.length` wide) on the unit
 * `direction`, accumulated in float64, into `out` (allocated when not given).
 */
export function projectRows(rows: ActivationData, rowCount: number, direction: Float32Array, out = new Float32Array(rowCount)): Float32Array {
  const d = direction.length;
  if (rows.data.length < rowCount * d) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `${rowCount} rows of width ${d} need ${rowCount * d} values, got ${rows.data.length}`);
  if (rows.dtype === 'f32') {
    const x = rows.data;
    for (let r = 0; r < rowCount; r++) {
      let sum = 0;
      const base = r * d;
      for (let i = 0; i < d; i++) sum += x[base + i] * direction[i];
      out[r] = sum;
    }
  } else {
    const bits = rows.data;
    const table = f16Values();
    for (let r = 0; r < rowCount; r++) {
      let sum = 0;
      const base = r * d;
      for (let i = 0; i < d; i++) sum += table[bits[base + i]] * direction[i];
      out[r] = sum;
    }
  }
  return out;
}

/**
 * A batch of projections as the monitor's rows: no active latents, L0 and FVU 0, `projection`
 * the scalars. `requestIndex` and `requestIds` are the frame's (not copied).
 */
export function projectionRows(projection: Float32Array, requestIndex: Uint32Array, requestIds: readonly string[]): EncodedRows {
  const rows = projection.length;
  return {
    rows,
    offsets: new Uint32Array(rows + 1),
    indices: new Uint32Array(0),
    values: new Float32Array(0),
    l0: new Uint32Array(rows),
    fvu: new Float32Array(rows),
    requestIndex,
    requestIds,
    projection,
  };
}

/**
 * `bins` (about) equal-mass bins' interior edges of `values`: near each (k/bins)-quantile, halfway
 * between two distinct values (see the loop), repeats dropped so the edges stay strictly increasing. SAEGATE_ERR_MONITOR_ARGUMENT when the values are empty or all equal (nothing to compare).
 */
export function quantileEdges(values: Float32Array, bins = PROJECTION_BINS): number[] {
  const finite = Float64Array.from(values.filter((v) => Number.isFinite(v))).sort();
  if (finite.length === 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', 'no finite projections to derive histogram edges from');
  if (finite[0] === finite[finite.length - 1]) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `all ${finite.length} projections equal ${finite[0]}; no histogram edges`);
  const edges: number[] = [];
  const n = finite.length;
  for (let k = 1; k < bins; k++) {
    // The edge goes halfway between two distinct recorded values, never on one: many rows share a
    // value exactly (the same token after the same prefix), and the monitor's rows (f16 on the
    // tap) differ from recorded f32 ones in the last bits, which would move a whole run of them
    // across an edge placed on their value. In a run, the edge goes after the run's end.
    let j = Math.max(1, Math.floor((k * n) / bins));
    if (finite[j - 1] === finite[j]) while (j < n && finite[j] === finite[j - 1]) j++;
    if (j >= n) break;
    const edge = (finite[j - 1] + finite[j]) / 2;
    if (edges.length === 0 || edge > edges[edges.length - 1]) edges.push(edge);
  }
  return edges;
}

/**
 * Records a projection baseline: each document's projections are kept (4 bytes a row) until
 * `toBaseline`, which derives the edges from all of them and bins each document. The baseline is a
 * regular one (baseline.ts) with `dSae` 1, no features, and `bins.projection`.
 */
export class ProjectionBaselineRecorder {
  private readonly documents: Float32Array[] = [];
  private open: Float32Array[] = [];

  /** Adds rows' projections to the open document. */
  addRows(projection: Float32Array): void {
    if (projection.length > 0) this.open.push(projection.slice());
  }

  /** Closes the open document (an empty one is skipped); returns the documents closed so far. */
  endDocument(): number {
    const rows = this.open.reduce((n, p) => n + p.length, 0);
    if (rows > 0) {
      const doc = new Float32Array(rows);
      let at = 0;
      for (const p of this.open) {
        doc.set(p, at);
        at += p.length;
      }
      this.documents.push(doc);
    }
    this.open = [];
    return this.documents.length;
  }

  get documentCount(): number {
    return this.documents.length;
  }

  get tokens(): number {
    return this.documents.reduce((n, d) => n + d.length, 0);
  }

  /** The baseline of the closed documents; SAEGATE_ERR_MONITOR_ARGUMENT when none hold varying projections. */
  toBaseline(identity: BaselineIdentity, bins = PROJECTION_BINS): Baseline {
    const all = new Float32Array(this.tokens);
    let at = 0;
    for (const doc of this.documents) {
      all.set(doc, at);
      at += doc.length;
    }
    const recorder = new BaselineRecorder({ dSae: PROJECTION_D_SAE, projectionEdges: quantileEdges(all, bins) });
    for (const doc of this.documents) recorder.addDocument(projectionRows(doc, new Uint32Array(doc.length), ['']));
    return recorder.toBaseline(identity);
  }
}
