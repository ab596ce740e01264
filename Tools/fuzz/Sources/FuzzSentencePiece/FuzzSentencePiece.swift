import FuzzSupport
import LoRAFuse
import LoRAFuseModels

/// A SentencePiece `spiece.model` (protobuf), loaded as T5's tokenizer and used on a prompt.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSentencePiece(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = FuzzScratch.file("spiece.model", UnsafeRawBufferPointer(start: data, count: size))
    if let tokenizer = try? UnigramTokenizer.load(path) {
        _ = tokenizer.encode("A photo of a cat, <extra_id_0> café", length: 32)
    }
    return 0
}
