// Compiled with `tsc --strict --noEmit` against the packed package: the declarations users get
// type-check, and misuse is rejected (`@ts-expect-error` fails the build if a line compiles).
import { pipeline, env, AmphiError, type ErrorCode, type TokenEntity } from 'amphi';

env.hubEndpoint = 'http://127.0.0.1:9999';

export async function usage(): Promise<void> {
  const extractor = await pipeline('feature-extraction', 'sentence-transformers/all-MiniLM-L6-v2', {
    device: 'auto',
    progress: (e) => {
      if (e.status === 'progress') console.log(e.file, e.loaded, e.total);
    },
  });
  const vectors: number[][] = await extractor(['a', 'b'], { pooling: 'mean', normalize: true });
  const tokens: number[][][] = await extractor('a', { pooling: 'none' });
  console.log(vectors[0]?.length, tokens.length, extractor.device, extractor.lastRun?.ms);
  for await (const chunk of extractor.stream(['a', 'b'], { pooling: 'mean' })) {
    const index: number = chunk.index;
    console.log(index, chunk.output.length);
  }
  await extractor.dispose();

  const classifier = await pipeline('text-classification', 'org/model', { device: 'cpu' });
  const labels = await classifier('I love it', { top_k: null });
  console.log(labels[0]?.label, labels[0]?.score);

  const ner = await pipeline('token-classification', 'https://example.com/ner/');
  const entities: TokenEntity[] = await ner('Ada lives in London', { aggregation_strategy: 'simple' });
  console.log(entities.map((e) => e.entity_group));

  const vision = await pipeline('image-classification', 'org/vit', { maxImagePixels: 1e7 });
  const top: { label: string; score: number }[] = await vision(new Uint8Array([1, 2]), { top_k: 3 });
  const each = await vision(['a.png', new Blob([]), { data: new Uint8ClampedArray(4), width: 1, height: 1 }]);
  console.log(top[0]?.label, each[0]?.[0]?.score, vision.info.max_image_pixels);
  // @ts-expect-error: images do not stream (one result per text input)
  vision.stream(['a.png']);
  // @ts-expect-error: an image pipeline takes images, not numbers
  await vision(42);
  // @ts-expect-error: not an image-classification option
  await vision('a.png', { pooling: 'mean' });

  const generator = await pipeline('text-generation', 'HuggingFaceTB/SmolLM2-135M-Instruct');
  const controller = new AbortController();
  const [first] = await generator('Once upon a time', { max_new_tokens: 20, temperature: 0.7, seed: 1, signal: controller.signal });
  const text: string | undefined = first?.generated_text;
  const reply = await generator([{ role: 'user', content: 'Hi' }], { stop: ['\n'] });
  console.log(text, reply[0]?.finish_reason, generator.info.chat_template);
  for await (const chunk of generator.stream('Hello', { max_new_tokens: 5 })) {
    const piece: string = chunk.output.text;
    const ids: number[] = chunk.output.token_ids;
    console.log(piece, ids, chunk.output.finish_reason);
  }
  // @ts-expect-error: not a generation option
  await generator('x', { pooling: 'mean' });
  // @ts-expect-error: prompts are strings or messages
  await generator(42);

  try {
    await ner('x');
  } catch (e) {
    if (e instanceof AmphiError) {
      const code: ErrorCode = e.code;
      console.log(code);
    }
  }

  // @ts-expect-error: not a task amphi runs
  await pipeline('summarization', 'x');
  // @ts-expect-error: not a device
  await pipeline('feature-extraction', 'x', { device: 'tpu' });
  // @ts-expect-error: a classification option on an extractor
  await extractor('a', { top_k: 3 });
}
