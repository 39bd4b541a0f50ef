/**
 * The subset of the Docker Engine API's container inspect answer
 * (GET /containers/{id}/json) that discovery reads. Our own type, so nothing of
 * dockerode's loose typing leaks past src/discovery/docker.
 */
export interface ContainerInfo {
  readonly Id: string;
  /** "/web-1" */
  readonly Name: string;
  readonly Config: {
    readonly Image?: string;
    readonly Labels?: Readonly<Record<string, string>> | null;
    readonly ExposedPorts?: Readonly<Record<string, unknown>> | null;
    /** The signal `docker stop` sends (absent: SIGTERM). */
    readonly StopSignal?: string;
  };
  readonly State: {
    readonly Running: boolean;
    readonly Paused?: boolean;
    readonly Restarting?: boolean;
    readonly Health?: { readonly Status: string } | null;
  };
  readonly NetworkSettings: {
    readonly Networks?: Readonly<Record<string, { readonly IPAddress?: string; readonly GlobalIPv6Address?: string }>> | null;
    /** "80/tcp" → its host bindings (null: exposed, not published). */
    readonly Ports?: Readonly<Record<string, readonly { readonly HostIp?: string; readonly HostPort?: string }[] | null>> | null;
  };
}

/** One event from GET /events. */
export interface DockerEvent {
  readonly Type: string;
  readonly Action: string;
  readonly Actor: { readonly ID: string; readonly Attributes?: Readonly<Record<string, string>> };
  readonly time?: number;
  readonly timeNano?: number;
}

/** A Swarm service (GET /services), the fields discovery reads. */
export interface SwarmService {
  readonly ID: string;
  readonly Spec: {
    readonly Name: string;
    readonly Labels?: Readonly<Record<string, string>> | null;
    readonly EndpointSpec?: { readonly Ports?: readonly { readonly TargetPort?: number; readonly Protocol?: string }[] | null } | null;
  };
}

/** A Swarm task (GET /tasks), the fields discovery reads. */
export interface SwarmTask {
  readonly ID: string;
  readonly ServiceID: string;
  readonly Slot?: number;
  readonly NodeID?: string;
  readonly DesiredState: string;
  readonly Status: { readonly State: string; readonly ContainerStatus?: { readonly ContainerID?: string } | null };
  readonly NetworksAttachments?: readonly { readonly Network: { readonly ID: string; readonly Spec: { readonly Name: string } }; readonly Addresses?: readonly string[] | null }[] | null;
}

/** What discovery needs from the engine: GET calls and the event stream only. */
export interface DockerClient {
  /** Ids of running containers. */
  listRunning(): Promise<string[]>;
  /** Inspect; resolves null when the container no longer exists. */
  inspect(id: string): Promise<ContainerInfo | null>;
  /** Subscribes to container and network events; the stream yields raw JSON. */
  events(): Promise<NodeJS.ReadableStream>;
  /** Swarm (on a manager): services, and tasks that are or should be running. */
  services(): Promise<SwarmService[]>;
  tasks(): Promise<SwarmTask[]>;
  /** Subscribes to service and container events. */
  swarmEvents(): Promise<NodeJS.ReadableStream>;
}
