/**
 * Turning request bodies into prompt token ids: completion prompts (text or token ids) and chat
 * messages (rendered with the tokenizer's Jinja chat template, or the default one below).
 */
import { Template } from '@huggingface/jinja';
import { SaegateError } from '../../common/errors.js';
import type { ModelConfig, Tokenizer } from '../types.js';
import type { ChatMessageField, CompletionBody } from './schemas.js';

/**
 * The chat template for tokenizers that ship none: one `role: content` line per message, then
 * `assistant:` with no trailing space or newline. Documented verbatim in docs/model-server.md.
 */
export const DEFAULT_CHAT_TEMPLATE =
  "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}";

/** Token ids of a `/v1/completions` prompt. Text gets the tokenizer's BOS; token ids are used as given. */
export function completionPromptTokens(prompt: CompletionBody['prompt'], tokenizer: Tokenizer, config: Pick<ModelConfig, 'vocabSize'>): number[] {
  let tokens: number[];
  if (typeof prompt === 'string') {
    tokens = tokenizer.encode(prompt, { addBos: true });
  } else if (typeof prompt[0] === 'string') {
    tokens = tokenizer.encode(prompt[0], { addBos: true });
  } else {
    tokens = (Array.isArray(prompt[0]) ? prompt[0] : prompt) as number[];
    const bad = tokens.findIndex((t) => t >= config.vocabSize);
    if (bad !== -1) {
      throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`prompt: token ${tokens[bad]} at index ${bad} is outside the vocabulary [0, ${config.vocabSize})`], {
        param: 'prompt',
      });
    }
  }
  if (tokens.length === 0) throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['prompt: the prompt is empty'], { param: 'prompt' });
  return tokens;
}

/** A message as the template sees it: text parts joined, `developer` folded into `system`. */
interface TemplateMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

function toTemplateMessage(message: ChatMessageField): TemplateMessage {
  const content = message.content === null ? '' : typeof message.content === 'string' ? message.content : message.content.map((part) => part.text).join('\n');
  return { role: message.role === 'developer' ? 'system' : message.role, content };
}

/** Renders chat messages with one compiled template and encodes the result. */
export class ChatPrompter {
  private readonly template: Template;
  private readonly bosToken: string;
  private readonly eosToken: string;

  /**
   * Compiles the tokenizer's chat template (or DEFAULT_CHAT_TEMPLATE) once. Throws
   * SAEGATE_ERR_TOKENIZER_FILE when the template does not parse, so a broken template stops the
   * server at start instead of failing every chat request.
   */
  constructor(private readonly tokenizer: Tokenizer) {
    const source = tokenizer.chatTemplate ?? DEFAULT_CHAT_TEMPLATE;
    try {
      this.template = new Template(source);
    } catch (error) {
      throw new SaegateError('SAEGATE_ERR_TOKENIZER_FILE', ['chat_template', `the chat template does not parse: ${(error as Error).message}`], { cause: error });
    }
    this.bosToken = tokenizer.bosToken ?? (tokenizer.bosId === null ? '' : tokenizer.decode([tokenizer.bosId]));
    this.eosToken = tokenizer.eosToken ?? (tokenizer.eosIds.length === 0 ? '' : tokenizer.decode([tokenizer.eosIds[0]]));
  }

  /** The prompt text, as the template renders it (BOS text included when the template writes it). */
  render(messages: readonly ChatMessageField[]): string {
    try {
      return this.template.render({
        messages: messages.map(toTemplateMessage),
        add_generation_prompt: true,
        bos_token: this.bosToken,
        eos_token: this.eosToken,
      });
    } catch (error) {
      // Templates refuse conversations with raise_exception (e.g. "roles must alternate"): the
      // client's messages are at fault, so this is a 400 about `messages`, as in vLLM.
      throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`messages: the chat template refused them: ${(error as Error).message}`], {
        param: 'messages',
        cause: error,
      });
    }
  }

  /** Prompt token ids, with exactly one BOS when the tokenizer has one. */
  encode(messages: readonly ChatMessageField[]): number[] {
    let text = this.render(messages);
    // Many templates start with {{ bos_token }}. Whether encode() maps that text back to the BOS id
    // depends on the tokenizer, so strip it and let addBos put the real id there: one BOS either way.
    if (this.bosToken !== '' && text.startsWith(this.bosToken)) text = text.slice(this.bosToken.length);
    return this.tokenizer.encode(text, { addBos: true });
  }
}
