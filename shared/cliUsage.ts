// What both CLIs print around commander: an Examples section at the end of each command's help, and a
// usage error as one line naming what was wrong plus a `usage:` line of the command that was meant.
import type { Command } from "commander";

/** One example: what it does (one line), and the command line itself, as an operator would type it. */
export interface Example {
  readonly does: string;
  readonly run: string;
}

/** A migration id of the form `quick-migrate status` lists, for the examples and the usage errors. */
export const EXAMPLE_MIGRATION_ID = "20261126T101500Z-3f9a0c";

/** The Examples section that ends a command's help. */
function examplesText(examples: readonly Example[]): string {
  return `\nExamples:\n${examples.map((e) => `  # ${e.does}\n  $ ${e.run}`).join("\n")}\n`;
}

/** `quick-migrate resume [options] <id>`: the command's full name and the form of its arguments. */
function commandForm(cmd: Command): string {
  return cmd.createHelp().commandUsage(cmd);
}

function fullName(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** The second line of a usage error: the right form, and where the examples are. */
export function usageLine(cmd: Command): string {
  return `usage: ${commandForm(cmd)}  (${fullName(cmd)} --help for examples)`;
}

/** commander's message on one line, without its `error: ` prefix: a suggestion goes in parentheses. */
export function oneLine(message: string): string {
  return message
    .replace(/^error: /, "")
    .replace(/\n\(Did you mean (.*)\)\s*$/, " (did you mean $1)")
    .trim()
    .split("\n")
    .join("; ");
}

/** What was wrong, for a command's usage error: commander's message, with a command given where none is expected named as such. */
function whatWasWrong(cmd: Command, message: string): string {
  const line = oneLine(message);
  // a command with an action of its own and subcommands (the agent's service): a word that is no subcommand
  if (cmd.commands.length > 0 && line.startsWith("too many arguments") && cmd.args[0] !== undefined) return `unknown command '${cmd.args[0]}'`;
  return line;
}

/** Each command's Examples, keyed by its path below the program ("" for the program, "parked list"). */
export function addExamples(root: Command, examples: Readonly<Record<string, readonly Example[]>>): void {
  for (const cmd of commandTree(root)) {
    const list = examples[fullName(cmd).split(" ").slice(1).join(" ")];
    if (list) cmd.addHelpText("after", examplesText(list));
  }
}

function* commandTree(cmd: Command): Generator<Command> {
  yield cmd;
  for (const sub of cmd.commands) yield* commandTree(sub);
}

/**
 * Every command of the tree but `except` prints its usage errors as `<command>: <what was wrong>` and its
 * usage line. Call it once all commands are defined.
 */
export function explainUsageErrors(root: Command, except: readonly Command[] = []): void {
  for (const cmd of commandTree(root)) {
    if (except.includes(cmd)) continue;
    cmd.configureOutput({ outputError: (message, write) => write(`${fullName(cmd)}: ${whatWasWrong(cmd, message)}\n${usageLine(cmd)}\n`) });
  }
}

/** A usage error found by a command's own check (a preAction hook): printed and ended like commander's own. */
export function usageError(cmd: Command, message: string): never {
  cmd.error(`error: ${message}`, { exitCode: 2, code: "commander.usage" });
}
