/**
 * The global names a Hugging Face chat template may call, as transformers provides them when it
 * renders one: Jinja's `range`, transformers' `raise_exception` and `strftime_now`, and the
 * Python spellings of the constants.
 *
 * We render with our own environment (rather than Template.render) so that `raise_exception`
 * can throw a SmolVLMError: a template raises it when the messages break its rules (say, roles
 * that do not alternate), which is the caller's mistake, not the template's.
 */
import { SmolVLMError } from "../errors.js";

const MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

function pad2(n: number): string {
  return n.toString().padStart(2, "0");
}

/** Python's strftime in the C locale for the common directives; others are left as written. */
export function strftime(date: Date, format: string): string {
  const fields: Record<string, () => string> = {
    Y: () => String(date.getFullYear()),
    y: () => pad2(date.getFullYear() % 100),
    m: () => pad2(date.getMonth() + 1),
    d: () => pad2(date.getDate()),
    H: () => pad2(date.getHours()),
    I: () => pad2(((date.getHours() + 11) % 12) + 1),
    p: () => (date.getHours() < 12 ? "AM" : "PM"),
    M: () => pad2(date.getMinutes()),
    S: () => pad2(date.getSeconds()),
    B: () => MONTHS[date.getMonth()]!,
    b: () => MONTHS[date.getMonth()]!.slice(0, 3),
    A: () => DAYS[date.getDay()]!,
    a: () => DAYS[date.getDay()]!.slice(0, 3),
    "%": () => "%",
  };
  return format.replace(/%(.)/gsu, (whole, key: string) => fields[key]?.() ?? whole);
}

/** Python's range(stop) / range(start, stop[, step]). */
export function range(...args: number[]): number[] {
  const [start, stop, step] = args.length === 1 ? [0, args[0]!, 1] : [args[0]!, args[1]!, args[2] ?? 1];
  if (![start, stop, step].every(Number.isInteger)) throw new Error("range() arguments must be integers");
  if (step === 0) throw new Error("range() step must not be zero");
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

/** The globals, keyed by name, ready for Environment.set. */
export function templateGlobals(): Record<string, unknown> {
  return {
    true: true,
    false: false,
    none: null,
    True: true,
    False: false,
    None: null,
    range,
    strftime_now: (format: string) => strftime(new Date(), String(format)),
    raise_exception: (message: unknown) => {
      throw new SmolVLMError("bad_request", `the chat template rejected the messages: ${String(message)}`);
    },
  };
}
