import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld
import Testing

@Suite struct AtomicFileTests {
    /// Files of one transaction land together or not at all.
    @Test func aTransactionLandsWholeOrNotAtAll() throws {
        let directory = TemporaryDirectory()
        // The second file cannot be written (its folder does not exist): neither lands, and no temporary file stays.
        let failed = AtomicFile.Transaction()
        #expect(failed.stage(directory.file("image.png")) { $0.write(Array("png".utf8)) } == nil)
        #expect(directory.contents.count == 1 && directory.contents[0].contains(".tmp-"))
        #expect(failed.stage(directory.file("missing/latents.safetensors")) { $0.write(Array("st".utf8)) } != nil)
        #expect(directory.contents.isEmpty, "\(directory.contents)")

        // A fill that fails (a full disk) discards what was staged before it too.
        let full = AtomicFile.Transaction()
        #expect(full.stage(directory.file("image.png")) { $0.write(Array("png".utf8)) } == nil)
        #expect(full.stage(directory.file("latents.safetensors")) { _ in "No space left on device" } == "No space left on device")
        #expect(directory.contents.isEmpty, "\(directory.contents)")

        // Dropped without a commit: nothing stays.
        do {
            let dropped = AtomicFile.Transaction()
            #expect(dropped.stage(directory.file("image.png")) { $0.write(Array("png".utf8)) } == nil)
        }
        #expect(directory.contents.isEmpty, "\(directory.contents)")

        // Committed: both, with their content.
        let good = AtomicFile.Transaction()
        #expect(good.stage(directory.file("image.png")) { $0.write(Array("png".utf8)) } == nil)
        #expect(good.stage(directory.file("latents.safetensors")) { $0.write(Array("st".utf8)) } == nil)
        #expect(good.commit() == nil)
        #expect(Set(directory.contents) == ["image.png", "latents.safetensors"])
        #expect(try String(contentsOfFile: directory.file("image.png"), encoding: .utf8) == "png")
    }
}
