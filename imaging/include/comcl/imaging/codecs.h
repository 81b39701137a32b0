// DCMTK's codec registry is process-global: every part of comcl registers through these two functions, so
// the settings are the same whoever comes first (DCMTK keeps the first registration).
#pragma once

namespace comcl::imaging {

// JPEG (baseline, extended, lossless), JPEG-LS and RLE decoders. Thread-safe, idempotent.
void registerDicomDecoders();

// JPEG, JPEG-LS and RLE encoders with comcl's settings: never replace the SOP Instance UID (callers decide
// identity), encode the true stored values (no stretching to the pixel range), JPEG-LS in raw mode.
// Thread-safe, idempotent.
void registerDicomEncoders();

}  // namespace comcl::imaging
