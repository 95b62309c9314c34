// `warbler ingest` (cli/ingest.ts) in its own process, with a consumer whose
// batch handler throws an error kafkajs does not restart from, for the test
// that the command then exits non-zero instead of idling. Arguments as for
// `warbler ingest`; configuration from the WARBLER_* environment.
import { IngestConsumer } from '../../ingest/consumer.ts';
import { runIngest } from '../../cli/ingest.ts';

(IngestConsumer.prototype as unknown as { onBatch: () => Promise<void> }).onBatch = async () => {
  throw new RangeError('Maximum call stack size exceeded');
};
process.exitCode = await runIngest(process.argv.slice(2));
