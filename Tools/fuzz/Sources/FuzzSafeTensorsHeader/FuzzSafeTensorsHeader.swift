import FuzzSupport
import LoRAFuse
import LoRAFuseFusion

/// A safetensors file: the header is parsed and validated, then every tensor's bytes are
/// read (a header that passes must describe bytes inside the file), and the LoRA reader runs.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafeTensorsHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let path = FuzzScratch.file("input.safetensors", UnsafeRawBufferPointer(start: data, count: size))
    guard let file = try? SafeTensorsFile(path: path) else { return 0 }
    var sum: UInt64 = 0
    for entry in file.entries {
        let tensor = file.tensor(entry)
        precondition(tensor.byteCount == entry.dataRange.count)
        tensor.withUnsafeBytes { bytes in for byte in bytes { sum &+= UInt64(byte) } }
        _ = tensor.firstNonFiniteIndex()
    }
    _ = try? LoRAFile.load(path: path, allowUnmatchedKeys: true)
    return sum == 0xFFFF_FFFF_FFFF_FFFF ? 1 : 0
}
