/**
 * Hugging Face tokenizers (`tokenizer.json`) through @huggingface/tokenizers, the maintained
 * pure-JS port of the Rust `tokenizers` crate. This file is the only one that imports it; library
 * errors become SAEGATE_ERR_TOKENIZER_FILE here.
 *
 * Beside tokenizer.json the loader reads, when present:
 * - `tokenizer_config.json`: bos_token / eos_token, add_bos_token, chat_template,
 *   clean_up_tokenization_spaces;
 * - `generation_config.json`: eos_token_id (chat models list several end-of-turn ids there);
 * - `chat_template.jinja`: where newer models keep the chat template.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as HfLibraryTokenizer } from '@huggingface/tokenizers';
import { z } from 'zod';
import { err } from '../../common/errors.js';
import type { Tokenizer } from '../types.js';

/** A special token in tokenizer_config.json: a string or a serialised AddedToken. */
const specialToken = z.union([z.string(), z.looseObject({ content: z.string() }), z.null()]).optional();

const tokenizerConfigSchema = z.looseObject({
  bos_token: specialToken,
  eos_token: specialToken,
  add_bos_token: z.boolean().optional(),
  clean_up_tokenization_spaces: z.boolean().optional(),
  chat_template: z.union([z.string(), z.array(z.looseObject({ name: z.string(), template: z.string() })), z.null()]).optional(),
});

const generationConfigSchema = z.looseObject({
  eos_token_id: z.union([z.number().int(), z.array(z.number().int()), z.null()]).optional(),
});

type TokenizerConfig = z.infer<typeof tokenizerConfigSchema>;

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (cause) {
    throw err('SAEGATE_ERR_TOKENIZER_FILE', file, `cannot read: ${(cause as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (cause) {
    throw err('SAEGATE_ERR_TOKENIZER_FILE', file, `not valid JSON: ${(cause as Error).message}`);
  }
}

function readOptionalJson<T>(file: string, schema: z.ZodType<T>): T | null {
  if (!fs.existsSync(file)) return null;
  const result = schema.safeParse(readJson(file));
  if (!result.success) {
    const issue = result.error.issues[0];
    throw err('SAEGATE_ERR_TOKENIZER_FILE', file, `${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  return result.data;
}

function tokenContent(token: TokenizerConfig['bos_token']): string | null {
  if (token === undefined || token === null) return null;
  return typeof token === 'string' ? token : token.content;
}

/** Picks the chat template: a string, or the one named "default" (else the first) of a list. */
function pickChatTemplate(config: TokenizerConfig | null, directory: string): string | null {
  const template = config?.chat_template;
  if (typeof template === 'string') return template;
  if (Array.isArray(template) && template.length > 0) return (template.find((t) => t.name === 'default') ?? template[0]).template;
  const jinja = path.join(directory, 'chat_template.jinja');
  return fs.existsSync(jinja) ? fs.readFileSync(jinja, 'utf8') : null;
}

/** A tokenizer.json-backed tokenizer; see the module comment. */
export class HfTokenizer implements Tokenizer {
  /** Largest token id plus one, added tokens included. */
  readonly vocabSize: number;
  /** BOS id; null when the tokenizer has none or its config says add_bos_token: false. */
  readonly bosId: number | null;
  readonly eosIds: readonly number[];
  readonly chatTemplate: string | null;
  /**
   * Text of the BOS / EOS special tokens (e.g. `<s>`, `</s>`) from tokenizer_config.json, for chat
   * templates' `bos_token` / `eos_token`: `decode` skips specials, so it cannot supply them.
   */
  readonly bosToken: string | null;
  readonly eosToken: string | null;
  /** The tokenizer.json this was loaded from. */
  readonly path: string;
  readonly #library: HfLibraryTokenizer;
  readonly #cleanUpSpaces: boolean;

  constructor(options: {
    path: string;
    library: HfLibraryTokenizer;
    bosId: number | null;
    eosIds: readonly number[];
    chatTemplate: string | null;
    cleanUpSpaces: boolean;
    bosToken: string | null;
    eosToken: string | null;
  }) {
    this.path = options.path;
    this.#library = options.library;
    this.bosId = options.bosId;
    this.eosIds = options.eosIds;
    this.chatTemplate = options.chatTemplate;
    this.bosToken = options.bosToken;
    this.eosToken = options.eosToken;
    this.#cleanUpSpaces = options.cleanUpSpaces;
    let maxId = -1;
    for (const id of options.library.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
  }

  /**
   * Encodes without the post-processor's special tokens (templates differ per model), then
   * prepends BOS when `addBos` is set and the model uses one. `addBos` defaults to false. Special
   * tokens written in the text (e.g. a rendered chat template's `<|eot_id|>`) are recognised.
   */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = text.length === 0 ? [] : this.#library.encode(text, { add_special_tokens: false }).ids;
    return options.addBos && this.bosId !== null ? [this.bosId, ...ids] : ids;
  }

  /** Decodes, skipping special tokens (BOS, EOS, chat markers) as inference servers do by default. */
  decode(ids: readonly number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw err('SAEGATE_ERR_BAD_REQUEST', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      }
    }
    // The library throws on an empty list.
    if (ids.length === 0) return '';
    return this.#library.decode([...ids], { skip_special_tokens: true, clean_up_tokenization_spaces: this.#cleanUpSpaces });
  }
}

/**
 * Loads a Hugging Face tokenizer from a `tokenizer.json` file or a directory holding one, with
 * the optional files beside it (module comment). SAEGATE_ERR_TOKENIZER_FILE when a file is
 * missing, not JSON, or rejected by the library.
 */
export function loadHfTokenizer(location: string): HfTokenizer {
  // A path that is neither an existing file nor *.json is taken as a directory, so a missing
  // directory is reported as its missing tokenizer.json.
  const isFile = location.endsWith('.json') || (fs.existsSync(location) && fs.statSync(location).isFile());
  const file = isFile ? location : path.join(location, 'tokenizer.json');
  const directory = path.dirname(file);
  const json = readJson(file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw err('SAEGATE_ERR_TOKENIZER_FILE', file, 'not a JSON object');
  const config = readOptionalJson(path.join(directory, 'tokenizer_config.json'), tokenizerConfigSchema);
  const generation = readOptionalJson(path.join(directory, 'generation_config.json'), generationConfigSchema);

  let library: HfLibraryTokenizer;
  try {
    // The library iterates added_tokens unconditionally; older files may omit the list.
    library = new HfLibraryTokenizer({ added_tokens: [], ...json }, config ?? {});
  } catch (cause) {
    throw err('SAEGATE_ERR_TOKENIZER_FILE', file, `not a supported tokenizer: ${(cause as Error).message}`);
  }

  const idOf = (token: string | null, field: string): number | null => {
    if (token === null) return null;
    const id = library.token_to_id(token);
    if (id === undefined) throw err('SAEGATE_ERR_TOKENIZER_FILE', path.join(directory, 'tokenizer_config.json'), `${field} '${token}' is not in the vocabulary`);
    return id;
  };
  const bosText = tokenContent(config?.bos_token);
  const eosText = tokenContent(config?.eos_token);
  const bosId = idOf(bosText, 'bos_token');
  const eosId = idOf(eosText, 'eos_token');
  const generationEos = generation?.eos_token_id;
  const eosIds = [...new Set([...(eosId === null ? [] : [eosId]), ...(generationEos === undefined || generationEos === null ? [] : [generationEos].flat())])];

  return new HfTokenizer({
    path: file,
    library,
    bosId: config?.add_bos_token === false ? null : bosId,
    eosIds,
    chatTemplate: pickChatTemplate(config, directory),
    bosToken: bosText,
    eosToken: eosText,
    // transformers defaults to false; the JS library would default to true.
    cleanUpSpaces: config?.clean_up_tokenization_spaces ?? false,
  });
}
