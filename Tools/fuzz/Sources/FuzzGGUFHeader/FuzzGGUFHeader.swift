import FuzzSupport
import LoRAFuse

/// A GGUF file: the header is parsed and validated, then every tensor is dequantized (a
/// header that passes must describe whole blocks inside the file).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUFHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = FuzzScratch.file("input.gguf", UnsafeRawBufferPointer(start: data, count: size))
    guard let file = try? GGUFFile(path: path) else { return 0 }
    var sum: Float = 0
    for tensor in file.tensors {
        precondition(tensor.offset + tensor.byteCount <= size)
        for value in file.dequantized(tensor) { sum += value }
    }
    return sum.bitPattern == 0x7FC0_0001 ? 1 : 0
}
