import FuzzSupport
import LoRAFuse
import LoRAFuseModels

/// CLIP's `vocab.json` and `merges.txt` (the input split at its first NUL byte), loaded and
/// used on a prompt.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCLIPVocabMerges(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let (vocab, merges) = splitAtNull(UnsafeRawBufferPointer(start: data, count: size))
    FuzzScratch.remove("tokenizer.json")
    _ = FuzzScratch.file("vocab.json", vocab)
    _ = FuzzScratch.file("merges.txt", merges)
    if let clip = try? CLIPTokenizer(folder: FuzzScratch.folder.path) {
        _ = clip.encode("a photo of a cat, café 🐈")
        _ = clip.encode("a photo", length: 8)
    }
    return 0
}
