import FuzzSupport
import LoRAFuse
import LoRAFuseModels

/// A tokenizers `tokenizer.json`, read as T5's Unigram model and as CLIP's BPE model, then
/// used on a prompt.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizerJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = FuzzScratch.file("tokenizer.json", UnsafeRawBufferPointer(start: data, count: size))
    let folder = FuzzScratch.folder.path
    if let unigram = try? UnigramTokenizer.load(folder) {
        _ = unigram.encode("A photo of a cat, <extra_id_0> café", length: 32)
    }
    if CLIPTokenizer.recognizes(folder: folder), let clip = try? CLIPTokenizer(folder: folder) {
        _ = clip.encode("A photo of a cat, café 🐈", length: 16)
    }
    return 0
}
