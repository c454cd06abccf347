import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StopSequenceDetokenizer } from '../../../src/model/http/detokenizer.js';
import { loadHfTokenizer, type HfTokenizer } from '../../../src/model/tokenizer/hf.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { makeTempDir, removeTempDir, writeHfTokenizer } from '../../helpers/fixtures.js';

describe('Hugging Face tokenizer', () => {
  let root: string;
  let tokenizer: HfTokenizer;
  beforeAll(() => {
    root = makeTempDir();
    writeHfTokenizer(path.join(root, 'llama'), { generationConfig: { eos_token_id: [2, 277] } });
    tokenizer = loadHfTokenizer(path.join(root, 'llama'));
  });
  afterAll(() => removeTempDir(root));

  it('reads the vocabulary size, BOS, every EOS id and the chat template', () => {
    expect(tokenizer.vocabSize).toBe(278);
    expect(tokenizer.bosId).toBe(1);
    expect(tokenizer.eosIds).toEqual([2, 277]);
    expect(tokenizer.bosToken).toBe('<s>');
    expect(tokenizer.eosToken).toBe('</s>');
    expect(tokenizer.chatTemplate).toContain("m['role']");
    expect(tokenizer.path).toBe(path.join(root, 'llama', 'tokenizer.json'));
  });

  it('encodes with BPE merges and prepends BOS only when asked', () => {
    expect(tokenizer.encode('hello world')).toEqual([271, 276]);
    expect(tokenizer.encode('hello world', { addBos: true })).toEqual([1, 271, 276]);
    expect(tokenizer.encode('')).toEqual([]);
    expect(tokenizer.encode('', { addBos: true })).toEqual([1]);
  });

  it('uses byte-fallback tokens for characters outside the vocabulary and decodes them back', () => {
    const ids = tokenizer.encode('hi 😀');
    expect(ids.slice(-4)).toEqual([...Buffer.from('😀', 'utf8')].map((b) => b + 3));
    expect(tokenizer.decode(ids)).toBe('hi 😀');
  });

  it('recognises special tokens written in the text and skips specials when decoding', () => {
    const ids = tokenizer.encode('hello<|eot|>world');
    expect(ids).toEqual([271, 277, 276]);
    expect(tokenizer.decode([1, ...ids, 2])).toBe('hello world');
  });

  it('decodes an empty list to the empty string and incomplete UTF-8 to U+FFFD', () => {
    expect(tokenizer.decode([])).toBe('');
    expect(tokenizer.decode([0xf0 + 3, 0x9f + 3])).toBe('\ufffd');
  });

  it('refuses to decode an id outside the vocabulary', () => {
    expect(() => tokenizer.decode([278])).toThrow(/outside the vocabulary/);
  });

  it('loads from the tokenizer.json path as well as the directory', () => {
    expect(loadHfTokenizer(path.join(root, 'llama', 'tokenizer.json')).encode('hello')).toEqual([271]);
  });

  it('has no BOS when tokenizer_config.json says add_bos_token: false, and none without a config', () => {
    writeHfTokenizer(path.join(root, 'nobos'), { tokenizerConfig: { bos_token: '<s>', eos_token: '</s>', add_bos_token: false } });
    const noBos = loadHfTokenizer(path.join(root, 'nobos'));
    expect(noBos.bosId).toBeNull();
    expect(noBos.encode('hello', { addBos: true })).toEqual([271]);
    expect(noBos.chatTemplate).toBeNull();
    writeHfTokenizer(path.join(root, 'bare'), { tokenizerConfig: null });
    const bare = loadHfTokenizer(path.join(root, 'bare'));
    expect(bare.bosId).toBeNull();
    expect(bare.eosIds).toEqual([]);
  });

  it('reads a chat template from chat_template.jinja or a named list', () => {
    writeHfTokenizer(path.join(root, 'jinja'), { tokenizerConfig: { bos_token: '<s>' } });
    fs.writeFileSync(path.join(root, 'jinja', 'chat_template.jinja'), '{{ messages }}');
    expect(loadHfTokenizer(path.join(root, 'jinja')).chatTemplate).toBe('{{ messages }}');
    writeHfTokenizer(path.join(root, 'list'), {
      tokenizerConfig: { chat_template: [{ name: 'tool_use', template: 'T' }, { name: 'default', template: 'D' }] },
    });
    expect(loadHfTokenizer(path.join(root, 'list')).chatTemplate).toBe('D');
  });

  it('rejects missing, non-JSON and unsupported tokenizer files naming the file', () => {
    expectSaegateError(() => loadHfTokenizer(path.join(root, 'absent')), 'SAEGATE_ERR_TOKENIZER_FILE', path.join(root, 'absent', 'tokenizer.json'), 'cannot read');
    fs.mkdirSync(path.join(root, 'broken'));
    fs.writeFileSync(path.join(root, 'broken', 'tokenizer.json'), '{"model": ');
    expectSaegateError(() => loadHfTokenizer(path.join(root, 'broken')), 'SAEGATE_ERR_TOKENIZER_FILE', 'broken', 'not valid JSON');
    fs.writeFileSync(path.join(root, 'broken', 'tokenizer.json'), JSON.stringify({ model: { type: 'Nope' }, normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null }));
    expectSaegateError(() => loadHfTokenizer(path.join(root, 'broken')), 'SAEGATE_ERR_TOKENIZER_FILE', 'broken', 'not a supported tokenizer');
  });

  it('rejects a tokenizer_config.json whose bos_token is not in the vocabulary', () => {
    writeHfTokenizer(path.join(root, 'badbos'), { tokenizerConfig: { bos_token: '<bos>' } });
    expectSaegateError(() => loadHfTokenizer(path.join(root, 'badbos')), 'SAEGATE_ERR_TOKENIZER_FILE', 'tokenizer_config.json', "bos_token '<bos>'");
  });
});

describe('streaming a Hugging Face (Metaspace) tokenizer', () => {
  let root: string;
  let tokenizer: HfTokenizer;
  beforeAll(() => {
    root = makeTempDir();
    writeHfTokenizer(path.join(root, 'llama'));
    tokenizer = loadHfTokenizer(path.join(root, 'llama'));
  });
  afterAll(() => removeTempDir(root));

  it('keeps the space between prompt and completion that decoding the completion alone would strip', () => {
    const ids = tokenizer.encode('hello world hello');
    const split = ids.length - 1;
    const completionAlone = tokenizer.decode(ids.slice(split));
    const whole = tokenizer.decode(ids);
    const expected = whole.slice(tokenizer.decode(ids.slice(0, split)).length);
    // The library strips the first token's leading space; the completion must keep it.
    expect(completionAlone).not.toBe(expected);
    expect(expected.startsWith(' ')).toBe(true);
    const detok = new StopSequenceDetokenizer({ tokenizer, stop: [], silentTokenIds: [], contextIds: ids.slice(0, split) });
    const streamed = ids.slice(split).map((id) => detok.push(id)).join('') + detok.finish();
    expect(streamed).toBe(expected);
  });
});
