/**
 * Every failure that a user can cause (a bad file, a bad option, a bad image) is raised as a
 * SmolVLMError with a message that names the problem and, where there is one, the file. The CLI
 * prints the message alone; anything else reaching the top is a bug and keeps its stack trace.
 */
export type ErrorCode =
  | "bad_config"
  | "bad_weights"
  | "bad_tokenizer"
  | "bad_template"
  | "bad_image"
  | "image_too_large"
  | "bad_request"
  | "not_found";

export class SmolVLMError extends Error {
  readonly code: ErrorCode;
  readonly file: string | undefined;

  constructor(code: ErrorCode, message: string, file?: string) {
    super(file === undefined ? message : `${file}: ${message}`);
    this.name = "SmolVLMError";
    this.code = code;
    this.file = file;
  }
}
