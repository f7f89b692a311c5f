#!/usr/bin/env python3
"""Golden token ids for test/tokenizers-*.test.ts, from reference tokenizer implementations.

Writes small JSON files under test/fixtures/tokenizers/:
  strings.json        the probe strings shared by every parity test (the last is the first 2,000
                      characters of WikiText-2 test)
  smollm2_gguf.json   ids of SmolLM2's GGUF vocabulary, by the Rust `tokenizers` library
  smollm2_other_pre.json  the same vocabulary with other pre-tokenizers (gpt-2, llama-bpe, qwen2)
  llama2_spm.json     ids by SentencePiece with Llama-2's tokenizer.model
                      (both also give the count and a sha256 of the ids of all of wiki.test.raw)
  llama2c_runc.json   ids by a line-for-line Python port of llama2.c run.c's encode(), for both
                      tokenizer.bin files (stories260K's 512 tokens and Llama-2's 32,000)
  tiny_bytelevel/     a tiny GPT-2-style byte-level BPE tokenizer.json trained here, with its ids
  tiny_llama/         a tiny Llama-style (Metaspace, byte fallback, BOS template) tokenizer.json

The SmolLM2 reference: a GGUF carries no tokenizer.json, so we rebuild the one SmolLM2 publishes
(BPE over the GGUF's vocab and merges; pre-tokenizer Digits(individual) then ByteLevel, which is
llama.cpp's 'smollm' pre-tokenizer) and let the Rust library tokenize. transformers' own GGUF loader
is run too, for information only: it does not know the 'smollm' pre-type and falls back to plain
GPT-2 splitting, so it differs where spaces precede digits; those strings are printed.

Usage: python3 scripts/make_tokenizer_fixtures.py   (needs gguf, tokenizers, sentencepiece, transformers)
"""
import hashlib
import json
import os
import sys

import gguf
import sentencepiece
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get('TOPIARY_DATA_DIR', os.path.join(ROOT, '..', 'shared', 'data'))
SMOLLM2_GGUF = os.environ.get('TOPIARY_SMOLLM2_GGUF', os.path.join(os.environ.get('TOPIARY_CACHE', os.path.expanduser('~/.cache/topiary')), 'SmolLM2-135M-Instruct.Q4_1.gguf'))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'tokenizers')

with open(os.path.join(DATA, 'wikitext2', 'wiki.test.raw'), encoding='utf-8') as f:
    WIKI_TEST = f.read()
WIKI_HEAD = WIKI_TEST[:2000]

STRINGS = [
    'Hello world',
    'Once upon a time, there was a little girl named Lily.',
    'The quick brown fox jumps over the lazy dog!',
    '12345',
    'In 1999 it cost $3.50 (about 2,000 yen).',
    'phone: 555-0123, pi = 3.14159',
    'Punctuation!?... "quoted" and \'single\' -- dashes; colons: {braces} [brackets]',
    "It's, don't, we'll, they've, I'm, she'd",
    'multiple   spaces    here',
    '   leading spaces',
    'trailing spaces   ',
    'line one\nline two\n\nparagraph\n',
    '\n\n',
    'tabs\tand\ttabs',
    'two  spaces before 42 and   7',
    'Unicode numbers: 4 \u00bd months, x\u00b2, \u216b, \u0663\u0664',
    'naïve café résumé, Straße, Ελληνικά, русский',
    '日本語のテキストと中文',
    'emoji: 😀🎉 👍🏽 and ❤️',
    'mixedCASE camelCase snake_case kebab-case URL https://example.com/a?b=c',
    'a',
    ' ',
    WIKI_HEAD,
]


def write_json(name, value):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(value, f, ensure_ascii=False, separators=(',', ':'))
        f.write('\n')
    print('wrote', os.path.relpath(path, ROOT), os.path.getsize(path), 'bytes')


def encode_all(encode):
    return [encode(s) for s in STRINGS]


def whole_wiki_test(encode):
    """Token count and sha256 of the comma-joined ids of all of wiki.test.raw encoded as one string."""
    ids = encode(WIKI_TEST)
    return {'count': len(ids), 'sha256': hashlib.sha256(','.join(map(str, ids)).encode()).hexdigest()}


def smollm2_reference():
    reader = gguf.GGUFReader(SMOLLM2_GGUF)
    tokens = reader.fields['tokenizer.ggml.tokens'].contents()
    merges = reader.fields['tokenizer.ggml.merges'].contents()
    token_types = reader.fields['tokenizer.ggml.token_type'].contents()
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(' ', 1)) for m in merges]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([t for t, kind in zip(tokens, token_types) if kind == 3])
    ids = encode_all(lambda s: tokenizer.encode(s, add_special_tokens=False).ids)
    write_json('smollm2_gguf.json', {
        'reference': 'Rust tokenizers %s: BPE from the GGUF vocab+merges, Digits(individual)+ByteLevel' % __import__('tokenizers').__version__,
        'ids': ids,
        'wiki_test': whole_wiki_test(lambda s: tokenizer.encode(s, add_special_tokens=False).ids),
    })
    report_transformers_gguf_divergence(ids)
    other_pre_tokenizers()


def report_transformers_gguf_divergence(reference_ids):
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(os.path.dirname(SMOLLM2_GGUF), gguf_file=os.path.basename(SMOLLM2_GGUF))
    except Exception as error:  # informational only
        print('transformers GGUF tokenizer unavailable:', error)
        return
    for text, ids in zip(STRINGS, reference_ids):
        theirs = hf.encode(text, add_special_tokens=False)
        if theirs != ids:
            print('transformers GGUF tokenizer differs on %r' % text[:60])


def other_pre_tokenizers():
    """The same vocabulary split as other tokenizer.ggml.pre types would split it, by transformers'
    GGUF converter (its regexes are transcribed from each model's published tokenizer.json)."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer
    architecture, tokenizer_dict, _ = get_gguf_tokenizer(SMOLLM2_GGUF)
    result = {'reference': 'transformers %s convert_gguf_tokenizer with tokenizer.ggml.pre overridden' % __import__('transformers').__version__}
    for pre in ['gpt-2', 'llama-bpe', 'qwen2']:
        backend, _ = convert_gguf_tokenizer(architecture, dict(tokenizer_dict, pre_tokenizer_type=pre))
        result[pre] = encode_all(lambda s: backend.encode(s, add_special_tokens=False).ids)
    write_json('smollm2_other_pre.json', result)


def llama2_reference():
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(DATA, 'tokenizers', 'llama2', 'tokenizer.model'))
    write_json('llama2_spm.json', {
        'reference': 'sentencepiece %s, Llama-2 tokenizer.model, no BOS' % sentencepiece.__version__,
        'ids': encode_all(sp.encode),
        'wiki_test': whole_wiki_test(sp.encode),
    })


def read_llama2c_tokenizer(path):
    import struct
    with open(path, 'rb') as f:
        data = f.read()
    vocab, scores, offset = [], [], 4
    while offset < len(data):
        score, length = struct.unpack_from('<fi', data, offset)
        vocab.append(data[offset + 8:offset + 8 + length])
        scores.append(score)
        offset += 8 + length
    return vocab, scores


def run_c_encode(vocab, scores, text):
    """llama2.c run.c encode(text, bos=0, eos=0), transcribed: UTF-8 characters (bytes + 3 when a
    character is not in the vocabulary), a dummy-prefix " " token, then repeatedly merge the
    leftmost adjacent pair whose concatenation is the highest-scoring vocabulary entry."""
    lookup = {piece: i for i, piece in enumerate(vocab)}
    raw = text.encode('utf-8')
    tokens = [lookup[b' ']] if raw else []
    i = 0
    while i < len(raw):
        end = i + 1
        while end < len(raw) and (raw[end] & 0xC0) == 0x80 and end - i < 4:
            end += 1
        char = raw[i:end]
        tokens.extend([lookup[char]] if char in lookup else [b + 3 for b in char])
        i = end
    while True:
        best_score, best_id, best_index = -1e10, -1, -1
        for index in range(len(tokens) - 1):
            merged = lookup.get(vocab[tokens[index]] + vocab[tokens[index + 1]], -1)
            if merged != -1 and scores[merged] > best_score:
                best_score, best_id, best_index = scores[merged], merged, index
        if best_index == -1:
            return tokens
        tokens[best_index:best_index + 2] = [best_id]


def llama2c_reference():
    result = {'reference': 'Python transcription of llama2.c run.c encode(), no BOS/EOS'}
    for name, path in [('stories260K', 'models/stories260K/tokenizer.bin'), ('llama2', 'tokenizers/llama2/tokenizer.bin')]:
        vocab, scores = read_llama2c_tokenizer(os.path.join(DATA, path))
        result[name] = encode_all(lambda s: run_c_encode(vocab, scores, s))
    write_json('llama2c_runc.json', result)


def training_text():
    with open(os.path.join(DATA, 'wikitext2', 'wiki.valid.raw'), encoding='utf-8') as f:
        return [line for line in f.read(60000).split('\n') if line.strip()]


def tiny_bytelevel():
    """GPT-2 style: byte-level BPE, no BOS, special token <|endoftext|>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=['<|endoftext|>'],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(training_text(), trainer)
    save_tiny('tiny_bytelevel', tokenizer, {'eos_token': '<|endoftext|>', 'bos_token': '<|endoftext|>', 'add_bos_token': False})


def tiny_llama():
    """Llama-2 style tokenizer.json: Metaspace, BPE with byte fallback, BOS added by the template."""
    tokenizer = Tokenizer(models.BPE(unk_token='<unk>', byte_fallback=True, fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend('\u2581'), normalizers.Replace(' ', '\u2581')])
    tokenizer.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(' ', 1, 0)])
    byte_tokens = ['<0x%02X>' % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=['<unk>', '<s>', '</s>'] + byte_tokens, show_progress=False)
    tokenizer.train_from_iterator(training_text(), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single='<s> $A', special_tokens=[('<s>', tokenizer.token_to_id('<s>'))])
    # The trainer only places the byte tokens at fixed ids as added tokens; in a real Llama
    # tokenizer.json they are plain vocabulary entries (so decode keeps them), which we restore.
    saved = json.loads(tokenizer.to_str())
    saved['added_tokens'] = [t for t in saved['added_tokens'] if t['content'] not in byte_tokens]
    tokenizer = Tokenizer.from_str(json.dumps(saved))
    save_tiny('tiny_llama', tokenizer, {'bos_token': '<s>', 'eos_token': '</s>', 'unk_token': '<unk>'})


def save_tiny(folder, tokenizer, config):
    os.makedirs(os.path.join(OUT, folder), exist_ok=True)
    tokenizer.save(os.path.join(OUT, folder, 'tokenizer.json'))
    write_json(os.path.join(folder, 'tokenizer_config.json'), config)
    write_json(os.path.join(folder, 'expected.json'), {
        'reference': 'Rust tokenizers %s' % __import__('tokenizers').__version__,
        'ids_with_special': encode_all(lambda s: tokenizer.encode(s).ids),
        'ids': encode_all(lambda s: tokenizer.encode(s, add_special_tokens=False).ids),
    })


def main():
    write_json('strings.json', STRINGS)
    smollm2_reference()
    llama2_reference()
    llama2c_reference()
    tiny_bytelevel()
    tiny_llama()


if __name__ == '__main__':
    sys.exit(main())
