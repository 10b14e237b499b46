/**
 * A small EC2/EBS account behind the Pulumi mocks, behaving as @pulumi/aws (terraform-provider-aws)
 * and EC2 document, so the cloud host's tests exercise what the real provider would do:
 * - getAmi with mostRecent: the newest image (by creation date) among the owners' images whose name
 *   matches the glob; "Your query returned no results" when none does;
 * - getEbsVolumes: the ids of the volumes matching every filter (`tag:KEY`, `status`, `volume-id`,
 *   `availability-zone`), an empty list when none does (ebs_volumes_data_source.go);
 * - getVolume: exactly one match, or an error;
 * - getInstanceTypeOfferings (location type availability-zone): the zones offering the type;
 * - Volume: create needs a zone; `import` (the engine reads the volume, then fails the import when
 *   the program's inputs differ from it: pulumi/pulumi developer-docs/architecture/import.md);
 * - Instance: without a zone EC2 picks one (here: the next offered zone, in turn);
 * - VolumeAttachment: only within the volume's zone (InvalidVolume.ZoneMismatch), and only while the
 *   volume is not attached elsewhere (VolumeInUse).
 */
import type * as pulumi from "@pulumi/pulumi";

export interface FakeImage {
  id: string;
  name: string;
  ownerId: string;
  creationDate: string;
}

export interface FakeVolume {
  id: string;
  availabilityZone: string;
  size: number;
  type: string;
  iops: number;
  throughput: number;
  tags: Record<string, string>;
  status: "available" | "in-use";
  attachedTo?: string;
}

interface FakeInstance {
  id: string;
  availabilityZone: string;
  ami: string;
}

export const DEFAULT_AMI = "ami-0kimikit0000test";
const UBUNTU_OWNER = "099720109477";

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".")}$`,
  );
}

/** JSON with object keys sorted: a tag map's order means nothing to EC2. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) =>
    inner && typeof inner === "object" && !Array.isArray(inner)
      ? Object.fromEntries(Object.entries(inner as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : inner,
  );
}

type Filter = { name: string; values: string[] };

export class FakeAws {
  images: FakeImage[] = [];
  volumes = new Map<string, FakeVolume>();
  instances = new Map<string, FakeInstance>();
  /** Zones offering each instance type; any type not listed is offered in these, in EC2's (unsorted) order. */
  defaultZones = ["us-east-1d", "us-east-1b", "us-east-1a", "us-east-1c"];
  private counter = 0;
  private placement = 0;

  constructor() {
    this.reset();
  }

  reset(): void {
    this.images = [
      {
        id: DEFAULT_AMI,
        name: "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250101",
        ownerId: UBUNTU_OWNER,
        creationDate: "2025-01-01T00:00:00.000Z",
      },
    ];
    this.volumes.clear();
    this.instances.clear();
  }

  /** Canonical publishes a newer image. */
  publishImage(image: FakeImage): void {
    this.images.push(image);
  }

  private nextId(prefix: string): string {
    this.counter += 1;
    return `${prefix}-0${this.counter.toString(16).padStart(16, "0")}`;
  }

  /** `pulumi destroy` of a stack whose volume is retained: attachments and instances go, the volume stays, detached. */
  destroyKeepingVolumes(): void {
    for (const volume of this.volumes.values()) {
      volume.status = "available";
      delete volume.attachedTo;
    }
    this.instances.clear();
  }

  call(args: pulumi.runtime.MockCallArgs): Record<string, unknown> {
    const inputs = args.inputs as Record<string, unknown>;
    const filters = (inputs.filters ?? []) as Filter[];
    switch (args.token) {
      case "aws:ec2/getAmi:getAmi": {
        const owners = (inputs.owners ?? []) as string[];
        const matches = this.images
          .filter((image) => owners.length === 0 || owners.includes(image.ownerId))
          .filter((image) =>
            filters.every(
              (filter) => filter.name !== "name" || filter.values.some((value) => globToRegExp(value).test(image.name)),
            ),
          )
          .sort((a, b) => a.creationDate.localeCompare(b.creationDate));
        if (matches.length === 0)
          throw new Error("Your query returned no results. Please change your search criteria and try again.");
        if (matches.length > 1 && !inputs.mostRecent)
          throw new Error(
            "Your query returned more than one result. Please try a more specific search criteria, or set `most_recent` attribute to true.",
          );
        const image = matches[matches.length - 1]!;
        return {
          ...inputs,
          id: image.id,
          imageId: image.id,
          name: image.name,
          ownerId: image.ownerId,
          creationDate: image.creationDate,
        };
      }
      case "aws:ebs/getEbsVolumes:getEbsVolumes":
        return {
          ...inputs,
          id: "us-east-1",
          ids: this.matchVolumes(filters, inputs.tags as Record<string, string> | undefined).map((volume) => volume.id),
        };
      case "aws:ebs/getVolume:getVolume": {
        const matches = this.matchVolumes(filters, undefined);
        if (matches.length !== 1)
          throw new Error(
            matches.length === 0 ? "Your query returned no results." : "Your query returned more than one result.",
          );
        const volume = matches[0]!;
        return {
          ...inputs,
          id: volume.id,
          volumeId: volume.id,
          availabilityZone: volume.availabilityZone,
          size: volume.size,
          volumeType: volume.type,
          iops: volume.iops,
          throughput: volume.throughput,
          tags: { ...volume.tags },
          encrypted: false,
          multiAttachEnabled: false,
        };
      }
      case "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {
        const type = filters.find((filter) => filter.name === "instance-type")?.values[0] ?? "";
        return {
          ...inputs,
          id: "us-east-1",
          locations: [...this.defaultZones],
          instanceTypes: this.defaultZones.map(() => type),
          locationTypes: this.defaultZones.map(() => "availability-zone"),
        };
      }
      default:
        return inputs;
    }
  }

  private matchVolumes(filters: Filter[], tags: Record<string, string> | undefined): FakeVolume[] {
    const value = (volume: FakeVolume, name: string): string | undefined => {
      if (name.startsWith("tag:")) return volume.tags[name.slice(4)];
      if (name === "status") return volume.status;
      if (name === "volume-id") return volume.id;
      if (name === "availability-zone") return volume.availabilityZone;
      throw new Error(`fake EC2: filter ${name} is not implemented`);
    };
    return [...this.volumes.values()].filter(
      (volume) =>
        filters.every((filter) => filter.values.includes(value(volume, filter.name) ?? "\u0000")) &&
        Object.entries(tags ?? {}).every(([key, tag]) => volume.tags[key] === tag),
    );
  }

  /** The provider's state for a new (or imported) resource; undefined for types this fake does not model. */
  newResource(
    args: pulumi.runtime.MockResourceArgs,
    preview: boolean,
  ): { id: string; state: Record<string, unknown> } | undefined {
    const inputs = args.inputs as Record<string, unknown>;
    switch (args.type) {
      case "aws:ebs/volume:Volume": {
        if (args.id) {
          const existing = this.volumes.get(args.id);
          if (!existing) throw new Error(`importing ${args.id}: InvalidVolume.NotFound`);
          const actual: Record<string, unknown> = {
            availabilityZone: existing.availabilityZone,
            size: existing.size,
            type: existing.type,
            iops: existing.iops,
            throughput: existing.throughput,
            tags: existing.tags,
          };
          const differing = Object.keys(actual).filter(
            (key) => key in inputs && canonicalJson(inputs[key]) !== canonicalJson(actual[key]),
          );
          if (differing.length > 0)
            throw new Error(`inputs to import do not match the existing resource: ${differing.join(", ")}`);
          return { id: existing.id, state: { ...inputs, ...actual } };
        }
        if (!inputs.availabilityZone) throw new Error("creating EBS Volume: availability_zone is required");
        const volume: FakeVolume = {
          id: this.nextId("vol"),
          availabilityZone: String(inputs.availabilityZone),
          size: Number(inputs.size),
          type: String(inputs.type ?? "gp2"),
          iops: Number(inputs.iops ?? 3000),
          throughput: Number(inputs.throughput ?? 125),
          tags: { ...((inputs.tags ?? {}) as Record<string, string>) },
          status: "available",
        };
        if (!preview) this.volumes.set(volume.id, volume);
        return {
          id: volume.id,
          state: {
            ...inputs,
            availabilityZone: volume.availabilityZone,
            iops: volume.iops,
            throughput: volume.throughput,
          },
        };
      }
      case "aws:ec2/instance:Instance": {
        const zone = inputs.availabilityZone
          ? String(inputs.availabilityZone)
          : this.defaultZones[this.placement++ % this.defaultZones.length]!;
        const instance: FakeInstance = { id: this.nextId("i"), availabilityZone: zone, ami: String(inputs.ami) };
        if (!preview) this.instances.set(instance.id, instance);
        return { id: instance.id, state: { ...inputs, availabilityZone: zone, publicIp: "198.51.100.7" } };
      }
      case "aws:ec2/volumeAttachment:VolumeAttachment": {
        if (preview) return { id: "", state: { ...inputs } };
        const volume = this.volumes.get(String(inputs.volumeId));
        const instance = this.instances.get(String(inputs.instanceId));
        if (!volume || !instance)
          throw new Error(`attaching ${String(inputs.volumeId)} to ${String(inputs.instanceId)}: not found`);
        if (volume.availabilityZone !== instance.availabilityZone) {
          throw new Error(
            `InvalidVolume.ZoneMismatch: The volume '${volume.id}' is not in the same availability zone as instance '${instance.id}'`,
          );
        }
        if (volume.status !== "available")
          throw new Error(`VolumeInUse: ${volume.id} is already attached to an instance`);
        volume.status = "in-use";
        volume.attachedTo = instance.id;
        return { id: `vai-${this.counter}`, state: { ...inputs } };
      }
      default:
        return undefined;
    }
  }
}

export const fakeAws = new FakeAws();
