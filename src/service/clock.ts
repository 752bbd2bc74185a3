/** The one source of "now" for services; tests and benches inject their own. */
export type Clock = () => Date;
export const systemClock: Clock = () => new Date();
