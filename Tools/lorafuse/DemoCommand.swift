import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// Where the bundled toy world is: `--world`, else `Examples/toyworld` under the current
/// folder (a clone's root), else beside this source file's checkout.
struct WorldLocation: ParsableArguments {
    @Option(name: .long, help: "The toy world folder (default: Examples/toyworld of this checkout).")
    var world: String?

    func load() throws -> ToyWorld {
        if let world { return try ToyWorld.load(folder: world) }
        let candidates = [FileManager.default.currentDirectoryPath,
                          URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path]
        for root in candidates {
            let folder = URL(fileURLWithPath: root).appendingPathComponent("Examples/toyworld").path
            if FileManager.default.fileExists(atPath: folder + "/world.json") { return try ToyWorld.load(folder: folder) }
        }
        throw ValidationError("no toy world found: run from the repository root or give --world FOLDER (Examples/toyworld)")
    }
}

/// One way of applying a content LoRA and a style LoRA: a column of the demo grid, a row of
/// the evaluation table.
enum FusionColumn: String, CaseIterable, ExpressibleByArgument {
    case content, style, merge, `switch`, composite, klora, autolora

    /// The `lorafuse generate` LoRA options this column stands for.
    func arguments(content: ToyWorld.Concept, style: ToyWorld.Concept, merger: String?) throws -> [String] {
        switch self {
        case .content: return ["--lora", content.lora]
        case .style: return ["--lora", style.lora]
        case .merge, .switch, .composite, .klora: return ["--fusion", rawValue, "--content", content.lora, "--style", style.lora]
        case .autolora:
            guard let merger else { throw ValidationError("autolora: this world has no AutoLoRA merger (`merger` in world.json)") }
            return ["--fusion", "autolora", "--fusion-weights", merger, "--lora", content.lora, "--lora", style.lora]
        }
    }
}

/// The toy world's pipeline loaded once, generating images for (content, style, column, seed).
struct WorldGenerator {
    let world: ToyWorld
    let backend: any Backend
    let flux: FluxModel
    let decoder: VAEDecoder
    let encoders: FluxTextEncoders
    let schedulerConfig: FlowMatchSchedulerConfig

    init(world: ToyWorld, backend: any Backend) throws {
        self.world = world
        self.backend = backend
        let pipeline = URL(fileURLWithPath: world.pipeline)
        flux = try FluxModel.load(path: pipeline.appendingPathComponent("transformer").path)
        decoder = try VAEDecoder.load(path: pipeline.appendingPathComponent("vae").path)
        encoders = try FluxTextEncoders.load(pipeline: world.pipeline)
        let scheduler = pipeline.appendingPathComponent("scheduler/scheduler_config.json")
        schedulerConfig = FileManager.default.fileExists(atPath: scheduler.path) ? try FlowMatchSchedulerConfig(file: scheduler) : FlowMatchSchedulerConfig()
    }

    /// H × W × 3 bytes for the fusion prompt of the pair, with the column's LoRAs, one image per seed.
    /// The LoRAs are loaded (and K-LoRA planned) once for all the seeds.
    func images(content: ToyWorld.Concept, style: ToyWorld.Concept, column: FusionColumn, seeds: [UInt64]) throws -> [[UInt8]] {
        let options = try LoRAOptions.parse(try column.arguments(content: content, style: style, merger: world.merger))
        let plan = try options.plan(flux, backend: backend)
        return try seeds.map { try image(content: content, style: style, plan: plan, seed: $0) }
    }

    private func image(content: ToyWorld.Concept, style: ToyWorld.Concept, plan: FusionPlan, seed: UInt64) throws -> [UInt8] {
        var settings = FluxTextToImage.Settings(prompt: world.prompt(content: content, style: style), width: world.width,
                                                height: world.height, steps: world.steps)
        settings.seed = seed
        settings.maxSequenceLength = world.maxSequenceLength
        settings.schedulerConfig = schedulerConfig
        return try FluxTextToImage(settings: settings, backend: backend).run(encoders: { encoders }, model: flux, plan: plan,
                                                                             vae: { decoder }).pixels
    }
}

/// `lorafuse demo`: the README's main command.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Draw the toy world's fusion grid: content+style pairs × (content only, style only, merge, switch, composite, K-LoRA, AutoLoRA).",
        discussion: """
        Uses the bundled toy world (Examples/toyworld: a FLUX pipeline trained on 32×32 shapes, content LoRAs that teach \
        new shapes and style LoRAs that teach new textures and palettes). Every image is generated from the pair's prompt \
        ("a zorbo in lumeq style") with the same seed along a row; only the LoRAs and the fusion method change.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, help: "Where to write the grid (.png).")
    var output = "lorafuse-demo.png"

    @Option(name: .long, parsing: .unconditional, help: "Rows: the first N of the world's demo pairs.")
    var pairs: Int?

    @Option(name: .long, parsing: .unconditional, help: "Seed of the first row (row i uses seed + i).")
    var seed: UInt64 = 0

    @Option(name: .long, parsing: .unconditional, help: "Pixels per image pixel in the grid.")
    var scale = 4

    @Option(name: .long, parsing: .upToNextOption, help: "Columns, in order (default: all the world supports).")
    var columns: [FusionColumn] = []

    @Flag(name: .long, inversion: .prefixedNo, help: "Titles above the columns and left of the rows.")
    var labels = true

    @OptionGroup var backendOptions: BackendOptions

    func validate() throws {
        if let pairs, pairs < 1 { throw ValidationError("--pairs must be at least 1") }
        guard (1...16).contains(scale) else { throw ValidationError("--scale must be in 1...16") }
        let folder = URL(fileURLWithPath: output).deletingLastPathComponent().path
        guard FileManager.default.isWritableFile(atPath: folder.isEmpty ? "." : folder) else {
            throw ValidationError("\(output): cannot write there (\(folder) is not a writable folder)")
        }
    }

    func run() throws {
        let world = try location.load()
        let backend = try backendOptions.makeBackend()
        let generator = try WorldGenerator(world: world, backend: backend)
        let columns = self.columns.isEmpty ? FusionColumn.allCases.filter { $0 != .autolora || world.merger != nil } : self.columns
        let pairs = Array(world.demoPairs.prefix(self.pairs ?? world.demoPairs.count))
        let start = DispatchTime.now().uptimeNanoseconds
        var rows: [[[UInt8]]] = []
        for (index, pair) in pairs.enumerated() {
            let (content, style) = (world.content[pair.content], world.style[pair.style])
            FileHandle.standardError.write(Data("row \(index + 1)/\(pairs.count): \"\(world.prompt(content: content, style: style))\" (\(content.label) + \(style.label))\n".utf8))
            rows.append(try columns.map { try generator.images(content: content, style: style, column: $0, seeds: [seed + UInt64(index)])[0] })
        }
        let titles: [FusionColumn: String] = [.content: "content", .style: "style", .merge: "merge", .switch: "switch",
                                              .composite: "composite", .klora: "K-LoRA", .autolora: "AutoLoRA"]
        let grid = ImageGrid.compose(rows, cellWidth: world.width, cellHeight: world.height, scale: scale,
                                     columnTitles: labels ? columns.map { titles[$0]! } : [],
                                     rowTitles: labels ? pairs.map { "\(world.content[$0.content].trigger)+\(world.style[$0.style].trigger)" } : [],
                                     textScale: max(1, scale / 2))
        let legend = "columns: \(columns.map(\.rawValue).joined(separator: ", ")); rows: " +
            pairs.map { "\(world.content[$0.content].trigger)+\(world.style[$0.style].trigger)" }.joined(separator: ", ")
        try PNGWriter.write(pixels: grid.pixels, width: grid.width, height: grid.height,
                            text: [("Description", legend), ("Software", "LoRAFuse \(LoRAFuseCommand.configuration.version) demo")], to: output)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "wrote %@ (%d×%d): %@ — %d images on %@ in %.1f s", output, grid.width, grid.height, legend,
                     rows.count * columns.count, backend.name, seconds))
    }
}

/// `lorafuse eval`: measurements on the toy world.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure fusion and retrieval on the toy world.",
        subcommands: [EvalFusionCommand.self, EvalRetrievalCommand.self]
    )
}

/// `lorafuse eval fusion`: K-LoRA's paper's table, scored by the world's classifiers.
struct EvalFusionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fusion",
        abstract: "Score fusion methods on content+style pairs: object score, style score, and both.",
        discussion: """
        For each pair and seed, each method generates the pair's prompt; the world's object classifier (18 shapes) and \
        style classifier (18 textures) score the image. object: the share of images classified as the content's shape; \
        style: as the style's texture; both: as both. The probabilities' means are in --json.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, parsing: .unconditional, help: "Content+style pairs (every content concept, styles rotated).")
    var pairs = 10

    @Option(name: .long, parsing: .unconditional, help: "Seeds per pair.")
    var seeds = 4

    @Option(name: .long, parsing: .upToNextOption, help: "Methods, in order (default: all the world supports).")
    var methods: [FusionColumn] = []

    @OptionGroup var backendOptions: BackendOptions

    @Flag(name: .long, help: "Print JSON instead of the table.")
    var json = false

    func validate() throws {
        guard pairs >= 1, seeds >= 1 else { throw ValidationError("--pairs and --seeds must be at least 1") }
    }

    func run() throws {
        let world = try location.load()
        guard let objectPath = world.objectClassifier, let stylePath = world.styleClassifier else {
            throw ValidationError("this world has no classifiers (`classifiers` in world.json)")
        }
        let backend = try backendOptions.makeBackend()
        let (objects, styles) = (try ImageClassifier.load(path: objectPath), try ImageClassifier.load(path: stylePath))
        let generator = try WorldGenerator(world: world, backend: backend)
        let methods = self.methods.isEmpty ? FusionColumn.allCases.filter { $0 != .autolora || world.merger != nil } : self.methods
        let pairs = world.evaluationPairs(self.pairs)
        let start = DispatchTime.now().uptimeNanoseconds
        var rows: [[String: Any]] = []
        for method in methods {
            var images: [[UInt8]] = [], targets: [(object: Int, style: Int)] = []
            for pair in pairs {
                let (content, style) = (world.content[pair.content], world.style[pair.style])
                guard let object = objects.classes.firstIndex(of: content.label), let texture = styles.classes.firstIndex(of: style.label) else {
                    throw ValidationError("the classifiers do not know \(content.label) or \(style.label)")
                }
                images += try generator.images(content: content, style: style, column: method, seeds: (0..<seeds).map { UInt64(1000 + $0) })
                targets += Array(repeating: (object, texture), count: seeds)
            }
            let objectScores = try objects.classify(images: images, width: world.width, height: world.height, on: backend)
            let styleScores = try styles.classify(images: images, width: world.width, height: world.height, on: backend)
            var (objectHits, styleHits, bothHits, objectProbability, styleProbability) = (0, 0, 0, 0.0, 0.0)
            for (index, target) in targets.enumerated() {
                let objectHit = Self.argmax(objectScores[index]) == target.object, styleHit = Self.argmax(styleScores[index]) == target.style
                objectHits += objectHit ? 1 : 0
                styleHits += styleHit ? 1 : 0
                bothHits += objectHit && styleHit ? 1 : 0
                objectProbability += Double(objectScores[index][target.object])
                styleProbability += Double(styleScores[index][target.style])
            }
            let n = Double(targets.count)
            rows.append(["method": method.rawValue, "object": Double(objectHits) / n, "style": Double(styleHits) / n, "both": Double(bothHits) / n,
                         "object_probability": objectProbability / n, "style_probability": styleProbability / n, "images": targets.count])
            if !json { FileHandle.standardError.write(Data("\(method.rawValue): \(targets.count) images\n".utf8)) }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if json {
            print(try JSONOutput.line(["command": "eval fusion", "backend": backend.name, "pairs": pairs.count, "seeds": seeds,
                                       "steps": world.steps, "seconds": seconds, "methods": rows]))
            return
        }
        print("fusion on the toy world: \(pairs.count) pairs × \(seeds) seeds, \(world.steps) steps, \(backend.name) (\(String(format: "%.0f", seconds)) s)")
        print("method     object  style   both")
        for row in rows {
            print(String(format: "%@ %.3f   %.3f   %.3f", (row["method"] as! String).padding(toLength: 10, withPad: " ", startingAt: 0),
                         row["object"] as! Double, row["style"] as! Double, row["both"] as! Double))
        }
    }

    static func argmax(_ values: [Float]) -> Int { values.indices.max { values[$0] < values[$1] } ?? 0 }
}

/// `lorafuse eval retrieval`: the world's LoRAs in a fresh pool, searched with held-out captions.
struct EvalRetrievalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieval",
        abstract: "Recall@1 and @5 of `pool search` on the toy world's held-out captions.",
        discussion: """
        Adds every LoRA of the world to a pool (a temporary one unless --db is given) with the world's trained weight \
        encoder, then searches each held-out caption (world.json `retrieval_queries`, captions the retriever never saw) \
        and checks where the LoRA it names ranks. --query adds captions of your own: CAPTION=LORA_FILE_NAME.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, help: "Keep the pool in this SQLite file (default: a temporary one).")
    var db: String?

    @Option(name: .long, help: "An extra query, CAPTION=LORA_FILE_NAME (e.g. \"a zorbo on grass=content-zorbo.safetensors\"); repeat.")
    var query: [String] = []

    @OptionGroup var backendOptions: BackendOptions

    @Flag(name: .long, help: "Print JSON instead of the summary.")
    var json = false

    func run() throws {
        let world = try location.load()
        guard let retriever = world.retriever else { throw ValidationError("this world has no retriever (`retriever` in world.json)") }
        var queries = world.retrievalQueries
        for extra in query {
            guard let split = extra.lastIndex(of: "="), split != extra.startIndex else { throw ValidationError("--query takes CAPTION=LORA_FILE_NAME, got \(extra)") }
            let name = String(extra[extra.index(after: split)...])
            guard let lora = (world.content + world.style).map(\.lora).first(where: { URL(fileURLWithPath: $0).lastPathComponent == name }) else {
                throw ValidationError("--query: no LoRA named \(name) in the world")
            }
            queries.append((lora, String(extra[..<split])))
        }
        guard !queries.isEmpty else { throw ValidationError("no queries: the world lists no `retrieval_queries` and no --query was given") }
        let backend = try backendOptions.makeBackend()
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-eval-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: temporary) }
        let pool = try LoRAPool(path: db ?? temporary.appendingPathComponent("pool.sqlite").path)
        let encoder = try LoRAWeightEncoder.load(path: retriever)
        for concept in world.content + world.style {
            try pool.add(path: concept.lora, caption: concept.caption, encoder: encoder, on: backend)
        }
        let queryEncoder = try RetrievalQueryEncoder.load(pipeline: world.pipeline)
        var (top1, top5) = (0, 0)
        var results: [[String: Any]] = []
        let start = DispatchTime.now().uptimeNanoseconds
        for (lora, caption) in queries {
            let matches = try pool.search(try queryEncoder.embed(caption, on: backend), k: 5, encoderVersion: encoder.version)
            let target = URL(fileURLWithPath: lora).standardizedFileURL.path
            let rank = matches.firstIndex { $0.entry.path == target }.map { $0 + 1 }
            top1 += rank == 1 ? 1 : 0
            top5 += rank != nil ? 1 : 0
            results.append(["caption": caption, "expected": URL(fileURLWithPath: lora).lastPathComponent, "rank": rank ?? NSNull(),
                            "found": matches.first.map { URL(fileURLWithPath: $0.entry.path).lastPathComponent } ?? NSNull()])
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let n = Double(queries.count)
        if json {
            print(try JSONOutput.line(["command": "eval retrieval", "backend": backend.name, "loras": world.content.count + world.style.count,
                                       "queries": queries.count, "recall_at_1": Double(top1) / n, "recall_at_5": Double(top5) / n,
                                       "seconds_per_query": seconds / n, "results": results]))
            return
        }
        for result in results where (result["rank"] as? Int) != 1 {
            print("  \"\(result["caption"]!)\": expected \(result["expected"]!), rank \(result["rank"] is NSNull ? "> 5" : "\(result["rank"]!)"), found \(result["found"]!)")
        }
        print(String(format: "retrieval on the toy world: %d LoRAs, %d held-out captions: recall@1 %.3f, recall@5 %.3f (%.1f ms per query with the CLIP encoding, %@)",
                     world.content.count + world.style.count, queries.count, Double(top1) / n, Double(top5) / n, seconds / n * 1000, backend.name))
    }
}
