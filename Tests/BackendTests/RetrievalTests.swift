import Foundation
import Testing
import LoRAFuse

/// AutoLoRA's LoRA weight encoder against a PyTorch implementation written from the
/// research code, LoRAs read by DiffSynth's own loader (Tools/reference/make_retrieval_fixtures.py).
@Suite(.serialized) struct RetrievalTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let encoderPath = fixtures.appendingPathComponent("retrieval/encoder.safetensors").path

    @Test(arguments: ["all.peft", "partial.peft", "attention.peft", "all.kohya", "attention.diffsynth"])
    func embeddingsMatchTheReference(_ name: String) throws {
        let encoder = try LoRAWeightEncoder.load(path: Self.encoderPath)
        #expect(encoder.layers.count == 26 && encoder.width == 16 && encoder.heads == 12)
        let lora = try LoRAFile.load(path: Self.fixtures.appendingPathComponent("lora/\(name).safetensors").path)
        let expected = try SafeTensorsFile(path: Self.fixtures.appendingPathComponent("retrieval/expected.safetensors").path).tensor(named: name)
        for backend in BackendsUnderTest.all {
            let embedding = try encoder.embed(lora, on: backend)
            let error = relativeError(actual: embedding, expected: expected.doubles())
            print("retrieval \(name) \(BackendsUnderTest.label(backend)) relative error \(error)")
            #expect(error <= 1e-4, "\(name) on \(BackendsUnderTest.label(backend)): \(error)")
        }
    }
}
