// @peculiar/x509 uses tsyringe, which needs the Reflect metadata API before it loads.
import "reflect-metadata";
