/** smolvlm: SmolVLM (Idefics3) vision-language inference for Node.js. */
export { SmolVLM } from "./smolvlm.js";
export type { ChatRequest, GenerateOptions, GenerationResult, ImageInput, LoadOptions, PreparedPrompt, Timings, FinishReason, DTypeMode } from "./smolvlm.js";
export type { ChatMessage, ContentPart } from "./tokenizer/chat-template.js";
export { ChatTemplate } from "./tokenizer/chat-template.js";
export { Tokenizer } from "./tokenizer/tokenizer.js";
export { ImageProcessor } from "./image/processor.js";
export { decodeImage } from "./image/decode.js";
export type { RgbImage } from "./image/decode.js";
export { SmolVLMError } from "./errors.js";
export type { ErrorCode } from "./errors.js";
export type { ModelConfig, TextConfig, VisionConfig } from "./io/config.js";
export { quantizeCheckpoint } from "./quant/quantize-model.js";
export type { QuantizeCheckpointOptions, QuantizeCheckpointResult } from "./quant/quantize-model.js";
export type { QuantScheme, QuantizationConfig } from "./quant/format.js";
