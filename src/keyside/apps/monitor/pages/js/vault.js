// Sentences that name the vault keyside runs with, from the `vault` field of runtime_info:
// {kind: "system" | "file" | "memory", display_name, file_name}. An unknown or missing kind
// gets sentences that name no vault, so a page never states the wrong one.

const MEMORY_SENTENCE = "API keys are kept in memory only until keyside exits: saved keys are lost when you quit.";

/** Return where saved keys are stored, as a phrase ("the system keyring"), or null when unknown. */
export function vaultPlace(vault) {
  if (vault?.kind === "system") {
    return "the system keyring";
  }
  if (vault?.kind === "file") {
    return typeof vault.file_name === "string" && vault.file_name
      ? `the encrypted file ${vault.file_name}` : "an encrypted file";
  }
  return null;
}

/** Return the dashboard footer's first sentence: where API keys stay. */
export function footerVaultSentence(vault) {
  if (vault?.kind === "memory") {
    return MEMORY_SENTENCE;
  }
  const place = vaultPlace(vault);
  return place ? `API keys stay in ${place}.` : "";
}

/** Return the settings page's sentence on where keys are saved and that they are never shown. */
export function settingsVaultSentence(vault) {
  if (vault?.kind === "memory") {
    return `${MEMORY_SENTENCE} They are never shown again, not even masked.`;
  }
  const place = vaultPlace(vault);
  return place ? `Keys are saved in ${place} and never shown again, not even masked.`
    : "Saved keys are never shown again, not even masked.";
}

/** Return the message shown after a key was saved. */
export function savedMessage(vault) {
  if (vault?.kind === "memory") {
    return "Saved for this session only: the key is lost when keyside exits. The dashboard uses it from now on.";
  }
  return "Saved. The dashboard uses the new key from now on.";
}
